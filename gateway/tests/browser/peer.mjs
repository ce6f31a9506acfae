// A headless Chromium WebRTC peer for spanbridge's tests, driven over stdin/stdout with one JSON
// object per line. Reusable by any test that needs a real browser (see
// gateway/tests/support/mod.rs for the Rust side).
//
//   node peer.mjs --wav FILE.wav [--chromium PATH]
//
// Commands (stdin):                         Replies (stdout):
//   {"cmd":"offer","codec":"PCMU"}           {"type":"offer","sdp":...}    browser offers
//   {"cmd":"answer","sdp":...}               {"type":"ok"}                 applies our answer
//   {"cmd":"accept","sdp":...,"codec":..}    {"type":"answer","sdp":...}   browser answers our offer
//   {"cmd":"wait-connected"}                 {"type":"connected"}
//   {"cmd":"record","seconds":3}             {"type":"recorded","rate":48000,"pcm":base64 i16le}
//   {"cmd":"dtmf","tones":"123#","duration":100,"gap":70}   {"type":"ok"} (after tonechange "")
//   {"cmd":"stats"}                          {"type":"stats","stats":{...}}
//   {"cmd":"load-jssip"}                    {"type":"ok","version":..}  JsSIP + jssip-phone.js
//   {"cmd":"eval","js":"..."}                {"type":"value","value":...}  (for other tests)
//   {"cmd":"close"}                          {"type":"closed"}, then exit
// Errors: {"type":"error","message":...}. Chromium is launched with the flags of
// ../shared/peers.md and a fresh profile; the page is served from 127.0.0.1 (a secure context).
import { chromium } from 'playwright-core';
import http from 'node:http';
import readline from 'node:readline';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt;
};
const wav = opt('--wav');
const executable = opt('--chromium', '/usr/lib/chromium/chromium');
// --trust-spki B64: accept (only) TLS certificates with this SubjectPublicKeyInfo SHA-256,
// e.g. a test's self-signed wss:// certificate generated at test time.
const trustSpki = opt('--trust-spki');
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');

const PAGE = `<!doctype html><meta charset="utf-8"><title>spanbridge test peer</title>
<audio id="remote" autoplay></audio>
<script>
window.sb = {
  pc: null, sender: null, remote: null, chunks: [], recording: false, ctx: null,
  async setup(codec) {
    const pc = new RTCPeerConnection({ iceServers: [] });
    this.pc = pc;
    pc.ontrack = (e) => {
      this.remote = e.streams[0] || new MediaStream([e.track]);
      document.getElementById('remote').srcObject = this.remote;
      this.startCapture();
    };
    const stream = await navigator.mediaDevices.getUserMedia({ audio: {
      echoCancellation: false, noiseSuppression: false, autoGainControl: false } });
    const tr = pc.addTransceiver(stream.getAudioTracks()[0], { direction: 'sendrecv', streams: [stream] });
    this.sender = tr.sender;
    this.transceiver = tr;
    this.codec = codec;
    return tr;
  },
  prefer(codec) {
    if (!codec) return;
    const caps = RTCRtpReceiver.getCapabilities('audio').codecs;
    const want = caps.filter((c) => c.mimeType.toLowerCase() === ('audio/' + codec).toLowerCase());
    const te = caps.filter((c) => c.mimeType.toLowerCase() === 'audio/telephone-event');
    this.transceiver.setCodecPreferences(want.concat(te));
  },
  async gathered() {
    const pc = this.pc;
    if (pc.iceGatheringState !== 'complete') {
      await new Promise((res) => {
        const f = () => { if (pc.iceGatheringState === 'complete') { pc.removeEventListener('icegatheringstatechange', f); res(); } };
        pc.addEventListener('icegatheringstatechange', f);
        setTimeout(res, 5000);
      });
    }
    return pc.localDescription.sdp;
  },
  async offer(codec) {
    await this.setup(codec);
    this.prefer(codec);
    await this.pc.setLocalDescription(await this.pc.createOffer());
    return this.gathered();
  },
  async answer(sdp) { await this.pc.setRemoteDescription({ type: 'answer', sdp }); },
  async accept(sdp, codec) {
    // Apply the offer first, then put the microphone on the transceiver it created (adding a
    // track before would make a second transceiver and leave the offered m-line without one).
    const pc = new RTCPeerConnection({ iceServers: [] });
    this.pc = pc;
    pc.ontrack = (e) => {
      this.remote = e.streams[0] || new MediaStream([e.track]);
      document.getElementById('remote').srcObject = this.remote;
      this.startCapture();
    };
    await pc.setRemoteDescription({ type: 'offer', sdp });
    const stream = await navigator.mediaDevices.getUserMedia({ audio: {
      echoCancellation: false, noiseSuppression: false, autoGainControl: false } });
    const tr = pc.getTransceivers()[0];
    await tr.sender.replaceTrack(stream.getAudioTracks()[0]);
    tr.direction = 'sendrecv';
    this.sender = tr.sender;
    this.transceiver = tr;
    this.prefer(codec);
    await pc.setLocalDescription(await pc.createAnswer());
    return this.gathered();
  },
  connected() {
    const pc = this.pc;
    return new Promise((res, rej) => {
      const f = () => {
        if (pc.connectionState === 'connected') res(true);
        else if (pc.connectionState === 'failed') rej(new Error('connection failed'));
        else setTimeout(f, 10);
      };
      f();
      setTimeout(() => rej(new Error('not connected after 10 s: ' + pc.connectionState)), 10000);
    });
  },
  startCapture() {
    if (this.ctx) return;
    const ctx = new AudioContext({ sampleRate: 48000 });
    this.ctx = ctx;
    const src = ctx.createMediaStreamSource(this.remote);
    const node = ctx.createScriptProcessor(4096, 1, 1);
    node.onaudioprocess = (e) => {
      if (this.recording) this.chunks.push(new Float32Array(e.inputBuffer.getChannelData(0)));
    };
    src.connect(node);
    node.connect(ctx.destination);
  },
  async record(seconds) {
    await this.ctx.resume();
    this.chunks = [];
    this.recording = true;
    await new Promise((r) => setTimeout(r, seconds * 1000));
    this.recording = false;
    const n = this.chunks.reduce((a, c) => a + c.length, 0);
    const pcm = new Int16Array(n);
    let o = 0;
    for (const c of this.chunks) for (let i = 0; i < c.length; i++) pcm[o++] = Math.max(-32768, Math.min(32767, Math.round(c[i] * 32767)));
    let s = '';
    const b = new Uint8Array(pcm.buffer);
    for (let i = 0; i < b.length; i += 0x8000) s += String.fromCharCode.apply(null, b.subarray(i, i + 0x8000));
    return { rate: this.ctx.sampleRate, pcm: btoa(s) };
  },
  dtmf(tones, duration, gap) {
    const d = this.sender.dtmf;
    if (!d || !d.canInsertDTMF) throw new Error('cannot insert DTMF (no telephone-event negotiated?)');
    return new Promise((res) => {
      d.ontonechange = (e) => { if (e.tone === '') res(); };
      d.insertDTMF(tones, duration, gap);
    });
  },
  async stats() {
    const r = await this.pc.getStats();
    const o = {};
    r.forEach((v) => { if (['inbound-rtp', 'outbound-rtp', 'transport', 'candidate-pair', 'codec'].includes(v.type)) o[v.id] = v; });
    return o;
  },
};
</script>`;

async function main() {
  if (!wav || !fs.existsSync(wav)) throw new Error('--wav FILE is required and must exist');
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end(PAGE);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${server.address().port}/`;
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'sb-chromium-'));
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: executable,
    headless: true,
    ignoreDefaultArgs: ['--headless', '--mute-audio'],
    args: [
      '--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--disable-default-apps', '--disable-extensions', '--use-fake-ui-for-media-stream',
      '--use-fake-device-for-media-stream', `--use-file-for-fake-audio-capture=${wav}`,
      '--autoplay-policy=no-user-gesture-required', '--allow-loopback-in-peer-connection',
      ...(trustSpki ? [`--ignore-certificate-errors-spki-list=${trustSpki}`] : []),
    ],
  });
  const cleanup = async () => {
    try { await browser.close(); } catch {}
    server.close();
    fs.rmSync(profile, { recursive: true, force: true });
  };
  const page = browser.pages()[0] || (await browser.newPage());
  page.on('console', (m) => process.stderr.write(`[page] ${m.text()}\n`));
  await page.goto(url);
  out({ type: 'ready' });
  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    if (!line.trim()) continue;
    let m;
    try { m = JSON.parse(line); } catch (e) { out({ type: 'error', message: 'bad json: ' + e }); continue; }
    try {
      switch (m.cmd) {
        case 'offer': out({ type: 'offer', sdp: await page.evaluate((c) => window.sb.offer(c), m.codec || null) }); break;
        case 'answer': await page.evaluate((s) => window.sb.answer(s), m.sdp); out({ type: 'ok' }); break;
        case 'accept': out({ type: 'answer', sdp: await page.evaluate(([s, c]) => window.sb.accept(s, c), [m.sdp, m.codec || null]) }); break;
        case 'wait-connected': await page.evaluate(() => window.sb.connected()); out({ type: 'connected' }); break;
        case 'record': out({ type: 'recorded', ...(await page.evaluate((s) => window.sb.record(s), m.seconds || 3)) }); break;
        case 'dtmf': await page.evaluate(([t, d, g]) => window.sb.dtmf(t, d, g), [m.tones, m.duration || 100, m.gap || 70]); out({ type: 'ok' }); break;
        case 'stats': out({ type: 'stats', stats: await page.evaluate(() => window.sb.stats()) }); break;
        case 'load-jssip': {
          // JsSIP bundled by setup.sh (esbuild) and the test softphone; missing: an error.
          const here = path.dirname(new URL(import.meta.url).pathname);
          for (const f of ['jssip.bundle.js', 'jssip-phone.js']) {
            if (!fs.existsSync(path.join(here, f))) throw new Error(`${f} missing in ${here}: run gateway/tests/browser/setup.sh`);
            await page.addScriptTag({ path: path.join(here, f) });
          }
          out({ type: 'ok', version: await page.evaluate(() => JsSIP.version) });
          break;
        }
        case 'eval': out({ type: 'value', value: await page.evaluate(m.js) }); break;
        case 'close': await page.evaluate(() => window.sb.pc && window.sb.pc.close()); await cleanup(); out({ type: 'closed' }); process.exit(0);
        default: out({ type: 'error', message: 'unknown cmd ' + m.cmd });
      }
    } catch (e) {
      out({ type: 'error', message: String(e && e.message || e) });
    }
  }
  await cleanup();
}

const watchdog = setTimeout(() => { process.stderr.write('peer.mjs: 60 s watchdog\n'); process.exit(3); }, 60000);
watchdog.unref();
main().catch((e) => { out({ type: 'error', message: String(e && e.stack || e) }); process.exit(2); });
