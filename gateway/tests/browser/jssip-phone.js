// JsSIP softphone for spanbridge's tests, loaded into peer.mjs's page after the JsSIP bundle
// ({"cmd":"load-jssip"}), driven with {"cmd":"eval","js":"phone.X(...)"}. Audio of the call
// goes through window.sb (record, stats) like the plain WebRTC peer's.
window.phone = {
  ua: null, socket: null, session: null, incoming: null, log: [],
  media: { audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false }, video: false },
  start(url, user, password, host) {
    const socket = new JsSIP.WebSocketInterface(url);
    this.socket = socket;
    const ua = new JsSIP.UA({
      sockets: [socket], uri: `sip:${user}@${host}`, password, register: true,
      session_timers: false, register_expires: 600,
      connection_recovery_min_interval: 1, connection_recovery_max_interval: 2,
    });
    this.ua = ua;
    ua.on('connected', () => this.log.push('connected'));
    ua.on('disconnected', () => this.log.push('disconnected'));
    ua.on('registered', () => this.log.push('registered'));
    ua.on('registrationFailed', (e) => this.log.push('registrationFailed ' + e.cause));
    ua.on('newRTCSession', (e) => {
      if (e.originator === 'remote') {
        this.incoming = e.session;
        this.hook(e.session);
        this.log.push('incoming ' + e.request.from.uri.user);
      }
    });
    ua.start();
    return this.waitFor('registered', 10000);
  },
  hook(s) {
    s.on('progress', (e) => this.log.push('progress ' + (e.response ? e.response.status_code : '')));
    s.on('accepted', () => this.log.push('accepted'));
    s.on('confirmed', () => { this.log.push('confirmed'); this.attach(s); });
    s.on('ended', (e) => this.log.push('ended ' + e.originator + ' ' + e.cause));
    s.on('failed', (e) => this.log.push('failed ' + e.originator + ' ' + e.cause));
  },
  attach(s) {
    const pc = s.connection;
    if (!pc) return;
    sb.pc = pc;
    sb.sender = pc.getSenders().find((x) => x.track && x.track.kind === 'audio') || pc.getSenders()[0];
    const r = pc.getReceivers().find((x) => x.track && x.track.kind === 'audio');
    if (r && !sb.ctx) {
      sb.remote = new MediaStream([r.track]);
      document.getElementById('remote').srcObject = sb.remote;
      sb.startCapture();
    }
  },
  waitFor(prefix, ms) {
    const from = this.log.length;
    return new Promise((res, rej) => {
      const t0 = Date.now();
      const f = () => {
        const hit = this.log.slice(0).find((l) => l.startsWith(prefix));
        if (hit) return res(hit);
        const bad = this.log.slice(from).find((l) => l.startsWith('failed') || l.startsWith('registrationFailed'));
        if (bad && !prefix.startsWith('failed')) return rej(new Error(`waiting for ${prefix}: ${bad}; log ${this.log.join(' | ')}`));
        if (Date.now() - t0 > ms) return rej(new Error(`no ${prefix} in ${ms} ms; log ${this.log.join(' | ')}`));
        setTimeout(f, 20);
      };
      f();
    });
  },
  // Waits for a log entry that appears after now.
  waitNew(prefix, ms) {
    const from = this.log.length;
    return new Promise((res, rej) => {
      const t0 = Date.now();
      const f = () => {
        const hit = this.log.slice(from).find((l) => l.startsWith(prefix));
        if (hit) return res(hit);
        if (Date.now() - t0 > ms) return rej(new Error(`no new ${prefix} in ${ms} ms; log ${this.log.join(' | ')}`));
        setTimeout(f, 20);
      };
      f();
    });
  },
  call(target) {
    this.log = this.log.filter((l) => l === 'registered' || l === 'connected');
    this.session = this.ua.call(target, { mediaConstraints: this.media, pcConfig: { iceServers: [] } });
    this.hook(this.session);
    return 'calling';
  },
  answer() {
    this.session = this.incoming;
    this.session.answer({ mediaConstraints: this.media, pcConfig: { iceServers: [] } });
    return 'answering';
  },
  dtmf(tones, type) {
    // One digit at a time, each after the previous one went (RFC 4733: tone change; INFO: sent).
    this.session.sendDTMF(tones, { transportType: type, duration: 120, interToneGap: 150 });
    return new Promise((r) => setTimeout(() => r('sent'), tones.length * 300 + 300));
  },
  hangup() { if (this.session) this.session.terminate(); return 'terminated'; },
  // Drops the SIP WebSocket under a live call; JsSIP reconnects and re-registers by itself.
  dropSocket() { this.socket._ws.close(); return 'dropped'; },
  renegotiate() {
    return new Promise((res, rej) => {
      const ok = this.session.renegotiate({}, () => res('renegotiated'));
      if (!ok) rej(new Error('renegotiate refused'));
      setTimeout(() => rej(new Error('renegotiate: no answer in 5 s; log ' + this.log.join(' | '))), 5000);
    });
  },
  // JsSIP hold / unhold: a re-INVITE with sendonly audio, then sendrecv again. Resolves with
  // the direction the gateway's answer gave the page's audio transceiver.
  hold(on) {
    return new Promise((res, rej) => {
      const done = () => {
        const t = sb.pc && sb.pc.getTransceivers().find((x) => x.receiver.track.kind === 'audio');
        res((on ? 'held ' : 'resumed ') + (t ? t.currentDirection : 'none'));
      };
      const ok = on ? this.session.hold({}, done) : this.session.unhold({}, done);
      if (!ok) rej(new Error((on ? 'hold' : 'unhold') + ' refused'));
      setTimeout(() => rej(new Error('hold: no answer in 5 s; log ' + this.log.join(' | '))), 5000);
    });
  },
  iceState() { return sb.pc ? sb.pc.iceConnectionState : 'none'; },
};
