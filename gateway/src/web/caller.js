// The click-to-call page: choose a destination, call (WHIP-style POST of the SDP offer),
// hang up (DELETE of the resource), keypad (RFC 4733 through the browser's DTMF sender),
// microphone level and connection state.
'use strict';

const C = { pc: null, stream: null, resource: null, uri: null, poll: null, meter: null, audioCtx: null };

async function loadDestinations() {
  try {
    const { data } = await SB.api('GET', '/api/v1/click-to-call/destinations');
    const sel = SB.el('destination');
    sel.textContent = '';
    data.destinations.forEach((d) => {
      const o = document.createElement('option'); o.value = d.id; o.textContent = d.label; sel.appendChild(o);
    });
    if (!data.destinations.length) SB.text('error', 'no destinations are configured');
  } catch (e) { SB.text('error', e.message); }
}

function micMeter(stream) {
  try {
    C.audioCtx = new AudioContext();
    const src = C.audioCtx.createMediaStreamSource(stream);
    const an = C.audioCtx.createAnalyser();
    an.fftSize = 512;
    src.connect(an);
    const buf = new Float32Array(an.fftSize);
    C.meter = setInterval(() => {
      an.getFloatTimeDomainData(buf);
      let s = 0; for (const v of buf) s += v * v;
      SB.el('mic-level').value = Math.min(1, Math.sqrt(s / buf.length) * 4);
    }, 100);
  } catch (e) { SB.log('mic meter: ' + e.message); }
}

async function call() {
  SB.text('error', '');
  SB.el('call-btn').disabled = true;
  SB.text('state', 'calling');
  const dest = SB.el('destination').value;
  const name = SB.el('caller-name').value.trim();
  try {
    const leg = await SB.webrtcLeg(async (offer) => {
      let url = '/api/v1/whip?destination=' + encodeURIComponent(dest);
      if (name) url += '&caller=' + encodeURIComponent(name);
      const r = await fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/sdp' }, body: offer });
      const text = await r.text();
      if (r.status !== 201) {
        let msg = r.status + ''; try { msg = JSON.parse(text).error.message; } catch (_) { /* keep */ }
        throw new Error(msg);
      }
      C.resource = r.headers.get('Location');
      C.uri = r.headers.get('X-Call-Uri');
      SB.text('call-uri', C.uri || '');
      return text;
    }, (s) => SB.text('conn-state', s), (stream) => { SB.el('remote-audio').srcObject = stream; });
    C.pc = leg.pc; C.stream = leg.stream;
    if (leg.media !== 'ok') SB.text('error', leg.media);
    SB.text('conn-state', C.pc.connectionState);
    if (C.stream) micMeter(C.stream);
    SB.el('hangup-btn').disabled = false;
    C.poll = setInterval(pollState, 1000);
    pollState();
  } catch (e) {
    SB.text('error', e.message);
    SB.text('state', 'failed');
    cleanup();
  }
}

async function pollState() {
  if (!C.resource) return;
  try {
    const r = await fetch(C.resource);
    if (r.status === 404) { SB.text('state', 'ended'); cleanup(); return; }
    const s = await r.json();
    SB.text('state', s.state);
    SB.text('queue-info', s.state === 'queued' && s.position ? '(position ' + s.position + ', about ' + s.expected_wait_s + ' s)' : s.agent ? '(with ' + s.agent + ')' : '');
    if (s.state === 'ended') cleanup();
  } catch (e) { SB.log(e.message); }
}

function cleanup() {
  if (C.poll) { clearInterval(C.poll); C.poll = null; }
  if (C.meter) { clearInterval(C.meter); C.meter = null; }
  if (C.audioCtx) { C.audioCtx.close(); C.audioCtx = null; }
  if (C.pc) { C.pc.close(); C.pc = null; }
  if (C.stream) { C.stream.getTracks().forEach((t) => t.stop()); C.stream = null; }
  C.resource = null;
  SB.el('mic-level').value = 0;
  SB.el('call-btn').disabled = false;
  SB.el('hangup-btn').disabled = true;
}

async function hangUp() {
  const res = C.resource;
  if (res) { try { await fetch(res, { method: 'DELETE' }); } catch (e) { SB.log(e.message); } }
  SB.text('state', 'ended');
  cleanup();
  SB.text('conn-state', 'closed');
}

function init() {
  loadDestinations();
  SB.el('call-btn').onclick = call;
  SB.el('hangup-btn').onclick = hangUp;
  const pad = SB.el('dtmf-pad');
  '123456789*0#'.split('').forEach((d) => {
    const b = document.createElement('button');
    b.textContent = d; b.dataset.digit = d;
    b.onclick = () => {
      const sender = C.pc && C.pc.getSenders().find((s) => s.track && s.track.kind === 'audio');
      if (sender && sender.dtmf && sender.dtmf.canInsertDTMF) sender.dtmf.insertDTMF(d, 100, 70);
      SB.el('dtmf-sent').textContent += d;
    };
    pad.appendChild(b);
  });
  window.addEventListener('beforeunload', () => { if (C.resource) navigator.sendBeacon && fetch(C.resource, { method: 'DELETE', keepalive: true }); });
}

init();
