// The supervisor view: live calls, agents and queues, refreshed on every event.
'use strict';

let refreshing = false, again = false;

function cell(tr, text, cls) {
  const td = document.createElement('td');
  td.textContent = text == null ? '' : String(text);
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

async function refresh() {
  if (refreshing) { again = true; return; }
  refreshing = true;
  try {
    const [calls, agents, queues] = await Promise.all([
      SB.api('GET', '/api/v1/calls'), SB.api('GET', '/api/v1/agents'), SB.api('GET', '/api/v1/queues')]);
    const cb = SB.el('calls'); cb.textContent = '';
    calls.data.calls.forEach((c) => {
      const tr = document.createElement('tr');
      tr.dataset.callUri = c.call_uri;
      cell(tr, c.call_uri, 'uri'); cell(tr, c.caller); cell(tr, c.state);
      cell(tr, c.agent || (c.offered_to.length ? 'ringing: ' + c.offered_to.join(', ') : ''));
      cell(tr, c.queue ? c.queue + (c.position ? ' #' + c.position : '') : '');
      cell(tr, c.transfer ? SB.partyLabel(c.transfer.target) + ' (' + c.transfer.kind + ')' : '');
      cell(tr, Math.round(c.age_ms / 1000) + ' s');
      cb.appendChild(tr);
    });
    SB.text('call-count', String(calls.data.calls.length));
    const ab = SB.el('agents'); ab.textContent = '';
    agents.data.agents.forEach((a) => {
      const tr = document.createElement('tr');
      tr.dataset.agent = a.id;
      cell(tr, a.name + ' (' + a.id + ')');
      const p = cell(tr, ''); const b = document.createElement('span'); b.className = 'badge ' + a.presence; b.textContent = a.presence; p.appendChild(b);
      cell(tr, a.endpoint || ''); cell(tr, a.call_uri || '', 'uri');
      cell(tr, a.idle_ms != null ? Math.round(a.idle_ms / 1000) + ' s' : '');
      ab.appendChild(tr);
    });
    const qb = SB.el('queues'); qb.textContent = '';
    queues.data.queues.forEach((q) => {
      const tr = document.createElement('tr');
      cell(tr, q.name); cell(tr, q.waiting.length); cell(tr, q.available_agents); cell(tr, q.staffed_agents);
      qb.appendChild(tr);
    });
  } catch (e) { SB.log('refresh failed: ' + e.message); }
  refreshing = false;
  if (again) { again = false; refresh(); }
}

async function open() {
  SB.setToken(SB.el('token').value.trim() || SB.token);
  try {
    const { data } = await SB.api('GET', '/api/v1/me');
    SB.text('who', data.principal.role + (data.principal.agent ? ' ' + data.principal.agent : ''));
    SB.show('login-panel', false);
    SB.show('board', true);
    SB.events((e) => {
      if (e.type === 'heartbeat' || e.type === 'hello') return;
      SB.log(e.seq + ' ' + e.type + (e.call_uri ? ' ' + e.call_uri : '') + (e.agent ? ' ' + e.agent : ''));
      refresh();
    }, (s) => { SB.text('conn', 'events: ' + s); if (s !== 'closed') refresh(); });
    refresh();
    setInterval(refresh, 5000);
  } catch (e) { SB.text('login-error', e.message); }
}

SB.el('token').value = SB.token;
SB.el('token-btn').onclick = open;
SB.el('token').onkeydown = (e) => { if (e.key === 'Enter') open(); };
