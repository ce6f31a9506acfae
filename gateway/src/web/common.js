// spanbridge pages: shared helpers (API calls with the bearer token, the event stream with
// resume from the last sequence number). Plain JavaScript, no build step.
'use strict';

const SB = {
  token: sessionStorage.getItem('sb.token') || '',

  setToken(t) { SB.token = t; sessionStorage.setItem('sb.token', t); },

  async api(method, path, body, contentType) {
    const headers = {};
    if (SB.token) headers.Authorization = 'Bearer ' + SB.token;
    let payload;
    if (body !== undefined) {
      if (contentType === 'application/sdp') { headers['Content-Type'] = contentType; payload = body; }
      else { headers['Content-Type'] = 'application/json'; payload = JSON.stringify(body); }
    }
    const r = await fetch(path, { method, headers, body: payload });
    const text = await r.text();
    let data = text;
    try { data = JSON.parse(text); } catch (_) { /* SDP or empty */ }
    if (!r.ok) {
      const msg = (data && data.error && data.error.message) || (r.status + ' ' + r.statusText);
      const e = new Error(msg); e.status = r.status; throw e;
    }
    return { status: r.status, data, headers: r.headers };
  },

  callPath(uri, action) {
    return '/api/v1/calls/' + encodeURIComponent(uri) + (action ? '/' + action : '');
  },

  // Opens the event stream; reconnects with `after=<last seq>` so nothing is missed.
  // onEvent(e) for every event, onState('open'|'closed'|'resync') for the connection.
  events(onEvent, onState) {
    let last = null, ws = null, delay = 250, stopped = false;
    const connect = () => {
      const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
      let url = proto + '//' + location.host + '/api/v1/events?access_token=' + encodeURIComponent(SB.token);
      if (last !== null) url += '&after=' + last;
      ws = new WebSocket(url);
      ws.onopen = () => { delay = 250; onState('open'); };
      ws.onmessage = (m) => {
        let e; try { e = JSON.parse(m.data); } catch (_) { return; }
        if (e.type === 'error' && e.code === 'resume_failed') { last = null; onState('resync'); return; }
        if (typeof e.seq === 'number') last = e.seq;
        onEvent(e);
      };
      ws.onclose = () => {
        onState('closed');
        if (!stopped) { setTimeout(connect, delay); delay = Math.min(delay * 2, 5000); }
      };
    };
    connect();
    return { stop() { stopped = true; if (ws) ws.close(); }, get last() { return last; } };
  },

  el(id) { return document.getElementById(id); },

  text(id, t) { const e = SB.el(id); if (e) e.textContent = t; },

  show(id, on) { const e = SB.el(id); if (e) e.classList.toggle('hidden', !on); },

  log(line) {
    const l = SB.el('log');
    if (!l) return;
    const ts = new Date().toISOString().slice(11, 23);
    l.textContent = ts + ' ' + line + '\n' + l.textContent.slice(0, 20000);
  },

  partyLabel(p) {
    if (!p) return '';
    if (p.agent) return 'agent ' + p.agent;
    if (p.queue) return 'queue ' + p.queue;
    if (p.sip_uri) return p.sip_uri;
    if (p.tdm_number) return 'number ' + p.tdm_number;
    return JSON.stringify(p);
  },

  // A WebRTC leg, WHIP-style: POST the offer (after ICE gathering), apply the answer.
  async webrtcLeg(postOffer, onState, onTrack) {
    const pc = new RTCPeerConnection();
    pc.onconnectionstatechange = () => onState(pc.connectionState);
    pc.ontrack = (ev) => onTrack && onTrack(ev.streams[0] || new MediaStream([ev.track]));
    let stream = null;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      stream.getTracks().forEach((t) => pc.addTrack(t, stream));
    } catch (e) {
      pc.addTransceiver('audio', { direction: 'sendrecv' });
    }
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((res) => {
      if (pc.iceGatheringState === 'complete') return res();
      const t = setTimeout(res, 2000);
      pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === 'complete') { clearTimeout(t); res(); } };
    });
    const answer = await postOffer(pc.localDescription.sdp);
    let media = 'ok';
    try { await pc.setRemoteDescription({ type: 'answer', sdp: answer }); }
    catch (e) { media = 'answer not applied: ' + e.message; }
    return { pc, stream, media };
  },
};
