// The agent page: log in with a token, presence, screen pop, softphone answer (WebRTC,
// WHIP-style), hold/mute/DTMF, blind and attended transfer. Plain JavaScript.
'use strict';

const A = {
  me: null,          // agent view
  endpoint: null,    // the endpoint kind logged in with
  offered: null,     // call URI popped
  current: null,     // call URI held
  pc: null,
  stream: null,
  held: false,
  muted: false,
  events: null,
  targets: [],
  // Call views (API responses) are numbered when asked for; one is shown only if no view
  // asked for later was shown already. An action's response can arrive after the events it
  // caused (a transfer target busy within milliseconds) and must not bring back its state.
  asked: 0,
  shown: 0,
  // The last transfer event of the call held ({ uri, text }): what the page says once the
  // transfer is over (failed, why; connected; cancelled), whatever view arrives after it.
  transferNote: null,
};

function transferStatus(t) {
  SB.text('transfer-status', t);
  SB.show('transfer-line', !!t);
}

// Takes a view number; true when the view numbered `n` may be shown (and records it).
function fresh(n) {
  if (n < A.shown) return false;
  A.shown = n;
  return true;
}

function setPresence(p) {
  const b = SB.el('presence-badge');
  b.textContent = p; b.className = 'badge ' + p;
}

function historyList(id, history) {
  const ol = SB.el(id);
  ol.textContent = '';
  (history || []).forEach((h) => {
    const li = document.createElement('li');
    li.textContent = (h.from || 'system') + ' → ' + SB.partyLabel(h.to) + ' (' + h.kind + ', ' + h.outcome + ')';
    ol.appendChild(li);
  });
}

async function afterToken() {
  SB.setToken(SB.el('token').value.trim() || SB.token);
  SB.text('login-error', '');
  try {
    const { data } = await SB.api('GET', '/api/v1/me');
    if (!data.agent) throw new Error('this is not an agent token (open /supervisor for supervisor and admin tokens)');
    A.me = data.agent;
    const sel = SB.el('endpoint');
    sel.textContent = '';
    A.me.endpoints.forEach((e) => {
      const o = document.createElement('option');
      o.value = e.kind; o.textContent = e.kind + (e.uri ? ' ' + e.uri : e.user ? ' ' + e.user : e.number ? ' ' + e.number : '');
      sel.appendChild(o);
    });
    SB.show('endpoint-row', true);
    if (A.me.presence !== 'offline') { A.endpoint = A.me.endpoint; enterDesk(); }
  } catch (e) { SB.text('login-error', e.message); }
}

async function login() {
  try {
    const { data } = await SB.api('POST', '/api/v1/agents/' + encodeURIComponent(A.me.id) + '/login', { endpoint: SB.el('endpoint').value });
    A.me = data; A.endpoint = data.endpoint;
    enterDesk();
  } catch (e) { SB.text('login-error', e.message); }
}

function enterDesk() {
  SB.show('login-panel', false);
  SB.show('desk', true);
  SB.text('me', A.me.name + ' (' + A.me.id + ', ' + A.endpoint + ')');
  setPresence(A.me.presence);
  if (A.events) A.events.stop();
  A.events = SB.events(onEvent, (s) => {
    SB.text('conn', 'events: ' + s);
    if (s === 'open' || s === 'resync') resync();
  });
  loadTargets();
}

async function resync() {
  try {
    const { data } = await SB.api('GET', '/api/v1/calls');
    let sawOffer = false, sawCall = false;
    for (const c of data.calls) {
      if (c.agent === A.me.id) { showCall(c); sawCall = true; }
      else if (c.offered_to.includes(A.me.id)) { showPop(c.call_uri, c.caller, c.queue, c.transfer ? 'transfer_target' : 'caller', c.transfer_history); sawOffer = true; }
    }
    if (!sawOffer) hidePop();
    if (!sawCall) clearCall();
    const me = await SB.api('GET', '/api/v1/agents/' + encodeURIComponent(A.me.id));
    setPresence(me.data.presence);
  } catch (e) { SB.log('resync failed: ' + e.message); }
}

async function loadTargets() {
  try {
    const { data } = await SB.api('GET', '/api/v1/transfer-targets');
    A.targets = data.targets;
    const sel = SB.el('transfer-target');
    const keep = sel.value;
    sel.textContent = '';
    data.targets.forEach((t, i) => {
      const o = document.createElement('option');
      o.value = String(i);
      o.textContent = t.label + (t.presence ? ' (' + t.presence + ')' : '') + (t.route ? ' — enter ' + t.route[0] + ' ' + t.route[1] : '');
      if (t.target && t.target.agent) o.dataset.agent = t.target.agent;
      if (t.target && t.target.queue) o.dataset.queue = t.target.queue;
      sel.appendChild(o);
    });
    if (keep) sel.value = keep;
    targetChanged();
  } catch (e) { SB.log('targets: ' + e.message); }
}

function targetChanged() {
  const t = A.targets[Number(SB.el('transfer-target').value)];
  SB.show('transfer-external', !!(t && t.route));
}

function showPop(uri, caller, queue, purpose, history) {
  A.offered = uri;
  const pop = SB.el('pop');
  pop.dataset.callUri = uri;
  SB.text('pop-caller', caller);
  SB.text('pop-uri', uri);
  SB.text('pop-queue', queue ? 'from queue ' + queue : '');
  SB.text('pop-purpose', purpose === 'transfer_target' ? 'transfer' : 'new call');
  historyList('pop-history', history);
  // Logged in with a phone (SIP URI, registered phone, TDM number): the gateway is calling
  // it now; the page pops all the same, and the agent answers (or declines) on the phone.
  const phone = A.endpoint !== 'browser';
  SB.show('answer-btn', !phone);
  SB.text('pop-phone-hint', phone ? 'Ringing on your phone' + deviceLabel() : '');
  SB.show('pop-phone-hint', phone);
  SB.show('pop', true);
}

// ' (sip:bob@...)' for the endpoint logged in with, '' when it has no address.
function deviceLabel() {
  const e = ((A.me && A.me.endpoints) || []).find((x) => x.kind === A.endpoint);
  const where = e && (e.uri || e.user || e.number);
  return where ? ' (' + where + ')' : '';
}

function hidePop() {
  A.offered = null;
  SB.el('pop').dataset.callUri = '';
  SB.show('pop', false);
}

// Shows the call held (or, as a consulted transfer target, the consultation: no transfer
// controls, hanging up leaves the consultation).
function showCall(c, consultTarget) {
  A.current = c.call_uri;
  SB.show('transfer-controls', !consultTarget);
  SB.text('call-role', consultTarget ? 'consultation from ' + (c.transfer.from || c.agent) : '');
  SB.text('call-device', A.endpoint === 'browser' ? 'in this page' : 'on your phone' + deviceLabel());
  const el = SB.el('call');
  el.dataset.callUri = c.call_uri;
  SB.text('call-caller', c.caller);
  SB.text('call-uri', c.call_uri);
  SB.text('call-state', c.state);
  historyList('call-history', c.transfer_history);
  A.held = c.held; A.muted = c.muted;
  SB.text('hold-btn', A.held ? 'Resume' : 'Hold');
  SB.text('mute-btn', A.muted ? 'Unmute' : 'Mute');
  const consulting = c.transfer && c.transfer.kind === 'attended';
  SB.show('consult-panel', !!c.transfer && !consultTarget);
  SB.el('complete-btn').disabled = !consulting;
  if (c.transfer) transferStatus(SB.partyLabel(c.transfer.target) + ': ' + JSON.stringify(c.transfer.state));
  else transferStatus(A.transferNote && A.transferNote.uri === c.call_uri ? A.transferNote.text : '');
  SB.show('call', true);
}

function clearCall() {
  A.current = null;
  SB.el('call').dataset.callUri = '';
  SB.show('call', false);
  SB.text('dtmf-sent', '');
  SB.text('call-error', '');
  A.transferNote = null;
  transferStatus('');
  stopSoftphone();
}

function stopSoftphone() {
  if (A.pc) { A.pc.close(); A.pc = null; }
  if (A.stream) { A.stream.getTracks().forEach((t) => t.stop()); A.stream = null; }
  SB.text('softphone', 'idle');
}

async function refreshCall(uri) {
  const n = ++A.asked;
  try {
    const { data } = await SB.api('GET', SB.callPath(uri));
    if (!fresh(n)) return;
    const consultTarget = data.transfer && data.transfer.target_agent === A.me.id && data.agent !== A.me.id;
    if (data.agent === A.me.id || consultTarget) showCall(data, consultTarget);
    else if (A.current === uri) clearCall();
  } catch (e) {
    if (e.status === 403 || e.status === 404) { if (A.current === uri) clearCall(); }
  }
}

function onEvent(e) {
  if (e.type === 'hello') return;
  if (e.type === 'heartbeat') { SB.el('conn').dataset.lastHeartbeat = String(e.seq); return; }
  SB.log(e.seq + ' ' + e.type + (e.call_uri ? ' ' + e.call_uri : '') + (e.agent ? ' ' + e.agent : ''));
  switch (e.type) {
    case 'agent.presence':
      if (e.agent === A.me.id) setPresence(e.presence);
      loadTargets();
      break;
    case 'call.offered':
      if (e.agent === A.me.id) showPop(e.call_uri, e.caller, e.queue, e.purpose, e.transfer_history);
      break;
    case 'call.offer_withdrawn':
      if (e.agent === A.me.id && A.offered === e.call_uri) hidePop();
      break;
    case 'call.answered':
      if (e.agent === A.me.id) { if (A.offered === e.call_uri) hidePop(); refreshCall(e.call_uri); }
      else if (A.current === e.call_uri) refreshCall(e.call_uri);
      break;
    case 'call.ended':
      if (A.offered === e.call_uri) hidePop();
      if (A.current === e.call_uri) clearCall();
      break;
    default:
      if (A.current === e.call_uri) {
        if (e.type.startsWith('transfer.')) {
          const text = e.type.slice(9) + (e.reason ? ' (' + JSON.stringify(e.reason) + ')' : '');
          A.transferNote = { uri: e.call_uri, text };
          transferStatus(text);
        }
        refreshCall(e.call_uri);
      }
  }
}

async function answer() {
  const uri = A.offered;
  if (!uri) return;
  SB.el('answer-btn').disabled = true;
  try {
    SB.text('softphone', 'connecting');
    const leg = await SB.webrtcLeg(
      async (offer) => (await SB.api('POST', SB.callPath(uri, 'answer'), offer, 'application/sdp')).data,
      (s) => SB.text('softphone', s),
      (stream) => { SB.el('remote-audio').srcObject = stream; });
    A.pc = leg.pc; A.stream = leg.stream;
    if (leg.media !== 'ok') SB.text('softphone', leg.media);
    hidePop();
    A.current = uri;
    await refreshCall(uri);
  } catch (e) {
    SB.text('softphone', 'failed: ' + e.message);
    SB.log('answer failed: ' + e.message);
  } finally { SB.el('answer-btn').disabled = false; }
}

async function act(action, body) {
  if (!A.current) return;
  SB.text('call-error', '');
  const n = ++A.asked;
  try {
    const { data } = await SB.api('POST', SB.callPath(A.current, action), body || {});
    if (!fresh(n)) return data;
    if (data.state === 'released') clearCall(); else if (data.call_uri) showCall(data);
    return data;
  } catch (e) { SB.text('call-error', e.message); }
}

function transferTarget() {
  const t = A.targets[Number(SB.el('transfer-target').value)];
  if (!t) return null;
  if (t.target) return t.target;
  const v = SB.el('transfer-external').value.trim();
  if (!v) return null;
  return t.route[0] === 'sip' ? { sip_uri: v } : { tdm_number: v };
}

function init() {
  SB.el('token').value = SB.token;
  SB.el('token-btn').onclick = afterToken;
  SB.el('token').onkeydown = (e) => { if (e.key === 'Enter') afterToken(); };
  SB.el('login-btn').onclick = login;
  SB.el('available-btn').onclick = () => SB.api('PUT', '/api/v1/agents/' + encodeURIComponent(A.me.id) + '/presence', { presence: 'available' }).catch((e) => SB.log(e.message));
  SB.el('away-btn').onclick = () => SB.api('PUT', '/api/v1/agents/' + encodeURIComponent(A.me.id) + '/presence', { presence: 'away', reason: 'break' }).catch((e) => SB.log(e.message));
  SB.el('logout-btn').onclick = async () => {
    try { await SB.api('POST', '/api/v1/agents/' + encodeURIComponent(A.me.id) + '/logout'); if (A.events) A.events.stop(); location.reload(); }
    catch (e) { SB.log(e.message); }
  };
  SB.el('answer-btn').onclick = answer;
  SB.el('decline-btn').onclick = async () => {
    if (!A.offered) return;
    try { await SB.api('POST', SB.callPath(A.offered, 'decline')); hidePop(); } catch (e) { SB.log(e.message); }
  };
  SB.el('hold-btn').onclick = () => act(A.held ? 'resume' : 'hold');
  SB.el('mute-btn').onclick = () => {
    act(A.muted ? 'unmute' : 'mute');
    if (A.stream) A.stream.getAudioTracks().forEach((t) => { t.enabled = A.muted; });
  };
  SB.el('hangup-btn').onclick = () => act('hangup');
  SB.el('transfer-target').onchange = targetChanged;
  SB.el('transfer-btn').onclick = () => {
    const target = transferTarget();
    if (!target) { SB.text('call-error', 'choose a target'); return; }
    act('transfer', { target, kind: SB.el('transfer-kind').value });
  };
  SB.el('complete-btn').onclick = () => act('transfer/complete');
  SB.el('cancel-btn').onclick = () => act('transfer/cancel');
  const pad = SB.el('dtmf-pad');
  '123A456B789C*0#D'.split('').forEach((d) => {
    const b = document.createElement('button');
    b.textContent = d; b.dataset.digit = d;
    b.onclick = async () => { if (await act('dtmf', { digits: d })) SB.el('dtmf-sent').textContent += d; };
    pad.appendChild(b);
  });
  if (SB.token) afterToken();
}

init();
