// The caller and agent pages in headless Chromium against the REAL engine and media plane:
// the caller page calls the support queue, agent A's page pops with the call's URI, A answers
// in the page (WebRTC softphone), clicks transfer to B; B's page (a second browser context)
// pops with the same URI and the transfer history, answers in the page; then what the caller
// page and B's page receive is recorded at the same time (WebAudio on the page's remote
// stream) and written as 48 kHz i16le files for the Rust side to correlate; the caller hangs up.
// Three browsers, because Chromium's fake microphone is one file per process: the caller's
// (CALLER_WAV), A's (ALICE_WAV) and B's (BOB_WAV). Before the transfer, the caller page and A's
// page are recorded too (at_caller_a.pcm, at_a.pcm).
// BOB_ENDPOINT=sip: B is logged in with a SIP phone (baresip, driven by the Rust side); B's page
// is a second context in A's browser and must pop with the URI, the transfer history and
// "Ringing on your phone"; then the script writes OUT/b_popped and the Rust side picks up the
// phone; B's page must show the call on the phone. KIND=busy: the phone answers 486.
// Usage: node engine_transfer.cjs BASE_URL OUT_DIR   (PW_DIR: where playwright-core is installed)
'use strict';
const fs = require('fs');
const path = require('path');
const { chromium } = require(path.join(process.env.PW_DIR, 'node_modules', 'playwright-core'));

const BASE = process.argv[2];
const OUT = process.argv[3];
const KIND = process.env.KIND || 'blind';
const BOB_PHONE = (process.env.BOB_ENDPOINT || 'browser') !== 'browser';
const T = 15000;
const steps = [];
const t0 = Date.now();
const step = (s) => { steps.push(s); console.log('step +' + (Date.now() - t0) + ' ms: ' + s); };

function launch(wav) {
  return chromium.launch({
    executablePath: '/usr/lib/chromium/chromium',
    ignoreDefaultArgs: ['--mute-audio'],
    args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--disable-default-apps', '--disable-extensions', '--use-fake-ui-for-media-stream',
      '--use-fake-device-for-media-stream', '--use-file-for-fake-audio-capture=' + wav,
      '--autoplay-policy=no-user-gesture-required', '--allow-loopback-in-peer-connection'],
  });
}

// Records `seconds` of the page's remote audio (the <audio id="remote-audio"> stream).
async function record(page, seconds) {
  return page.evaluate(async (secs) => {
    const stream = document.getElementById('remote-audio').srcObject;
    if (!stream) throw new Error('no remote stream on the page');
    const ctx = new AudioContext({ sampleRate: 48000 });
    await ctx.resume();
    const src = ctx.createMediaStreamSource(stream);
    const node = ctx.createScriptProcessor(4096, 1, 1);
    const chunks = [];
    node.onaudioprocess = (e) => chunks.push(new Float32Array(e.inputBuffer.getChannelData(0)));
    src.connect(node);
    node.connect(ctx.destination);
    await new Promise((r) => setTimeout(r, secs * 1000));
    node.disconnect(); src.disconnect();
    await ctx.close();
    const n = chunks.reduce((a, c) => a + c.length, 0);
    const pcm = new Int16Array(n);
    let o = 0;
    for (const c of chunks) for (let i = 0; i < c.length; i++) pcm[o++] = Math.max(-32768, Math.min(32767, Math.round(c[i] * 32767)));
    let s = '';
    const b = new Uint8Array(pcm.buffer);
    for (let i = 0; i < b.length; i += 0x8000) s += String.fromCharCode.apply(null, b.subarray(i, i + 0x8000));
    return btoa(s);
  }, seconds);
}

// Test-only: the pages ask for a plain microphone (echo cancellation, noise suppression and
// gain control on, as a softphone should); Chromium's audio processing reshapes the fake
// capture's speech, so the contexts turn it off to let the Rust side correlate sample by sample.
async function newContext(browser) {
  const ctx = await browser.newContext();
  await ctx.addInitScript(() => {
    const md = navigator.mediaDevices;
    const orig = md.getUserMedia.bind(md);
    md.getUserMedia = (c) => orig(c && c.audio ? { ...c, audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false } } : c);
  });
  return ctx;
}

async function agentPage(browser, token, endpoint) {
  const ctx = await newContext(browser);
  const page = await ctx.newPage();
  page.on('console', (m) => { if (m.type() === 'error') console.log('[' + token + ' console] ' + m.text()); });
  page.on('pageerror', (e) => console.log('[' + token + ' pageerror] ' + e.message));
  await page.goto(BASE + '/agent');
  await page.fill('#token', token);
  await page.click('#token-btn');
  await page.waitForSelector('#endpoint-row:not(.hidden)', { timeout: T });
  await page.selectOption('#endpoint', endpoint || 'browser');
  await page.click('#login-btn');
  await page.waitForSelector('#desk:not(.hidden)', { timeout: T });
  await page.waitForFunction(() => document.getElementById('conn').textContent === 'events: open', null, { timeout: T });
  return page;
}

async function popUri(page) {
  await page.waitForSelector('#pop:not(.hidden)', { timeout: T });
  return page.$eval('#pop', (e) => e.dataset.callUri);
}

async function callUri(page) {
  await page.waitForSelector('#call:not(.hidden)', { timeout: T });
  return page.$eval('#call', (e) => e.dataset.callUri);
}

const textIs = (page, id, want) => page.waitForFunction(([i, w]) => document.getElementById(i).textContent === w, [id, want], { timeout: T });

(async () => {
  const result = {};
  let browsers = [];
  const pages = {};
  try {
    // With B on a phone, B's page needs no microphone: a second context in A's browser.
    const wavs = BOB_PHONE ? [process.env.ALICE_WAV, process.env.CALLER_WAV] : [process.env.ALICE_WAV, process.env.BOB_WAV, process.env.CALLER_WAV];
    browsers = await Promise.all(wavs.map(launch));
    const [alices, bobs, callers] = BOB_PHONE ? [browsers[0], browsers[0], browsers[1]] : browsers;
    const [a, b] = await Promise.all([agentPage(alices, process.env.ALICE_TOKEN), agentPage(bobs, process.env.BOB_TOKEN, process.env.BOB_ENDPOINT)]);
    pages.a = a; pages.b = b;
    step('both agents logged in (A: browser softphone, B: ' + (process.env.BOB_ENDPOINT || 'browser') + ')');

    const caller = await (await newContext(callers)).newPage();
    caller.on('pageerror', (e) => console.log('[caller pageerror] ' + e.message));
    caller.on('console', (m) => { if (m.type() === 'error') console.log('[caller console] ' + m.text()); });
    await caller.goto(BASE + '/caller');
    await caller.waitForFunction(() => document.querySelectorAll('#destination option').length > 0, null, { timeout: T });
    await caller.fill('#caller-name', 'Web Visitor');
    await caller.click('#call-btn');
    await caller.waitForFunction(() => document.getElementById('call-uri').textContent.startsWith('urn:uuid:'), null, { timeout: T });
    const uri = await caller.textContent('#call-uri');
    result.call_uri = uri;
    step('caller page placed the call: ' + uri);

    const popA = await popUri(a);
    if (popA !== uri) throw new Error('A popped ' + popA + ', caller has ' + uri);
    if ((await a.textContent('#pop-uri')) !== uri) throw new Error('A pop shows another URI');
    if ((await a.textContent('#pop-caller')) !== 'Web Visitor') throw new Error('A pop caller is ' + await a.textContent('#pop-caller'));
    step('A popped with the URI and the caller');
    await a.click('#answer-btn');
    if ((await callUri(a)) !== uri) throw new Error('A holds another call');
    await textIs(a, 'call-state', 'connected');
    await textIs(a, 'softphone', 'connected');
    await textIs(caller, 'conn-state', 'connected');
    await textIs(caller, 'state', 'connected');
    step('A answered in the page: softphone connected, caller page connected');
    await new Promise((r) => setTimeout(r, 300));
    const [atCallerA, atA] = await Promise.all([record(caller, 2), record(a, 2)]);
    fs.writeFileSync(path.join(OUT, 'at_caller_a.pcm'), Buffer.from(atCallerA, 'base64'));
    fs.writeFileSync(path.join(OUT, 'at_a.pcm'), Buffer.from(atA, 'base64'));
    step('recorded 2 s at the caller page and at A\'s page');

    await a.waitForFunction(() => !!document.querySelector('#transfer-target option[data-agent="bob"]'), null, { timeout: T });
    const bobValue = await a.$eval('#transfer-target option[data-agent="bob"]', (o) => o.value);
    await a.selectOption('#transfer-target', bobValue);
    const failing = KIND === 'decline' || KIND === 'noanswer' || KIND === 'busy';
    await a.selectOption('#transfer-kind', failing ? 'blind' : KIND);
    await a.click('#transfer-btn');
    if (failing) {
      // B's page pops; B declines or lets it ring out (no answer); the caller must come
      // back to A, with audio both ways, and A's page says why the transfer failed.
      // A busy phone answers 486 at once: B's pop may be gone before anyone could see it.
      if (KIND !== 'busy') {
        const popBf = await popUri(b);
        if (popBf !== uri) throw new Error('B popped ' + popBf + ', expected ' + uri);
        if (BOB_PHONE) result.b_pop_hint = await b.textContent('#pop-phone-hint');
        step('B popped with the same URI' + (BOB_PHONE ? ': ' + result.b_pop_hint : ''));
      }
      if (KIND === 'decline') await b.click('#decline-btn');
      await b.waitForSelector('#pop.hidden', { state: 'attached', timeout: T });
      await a.waitForFunction(() => document.getElementById('transfer-status').textContent.startsWith('failed')
        || document.getElementById('transfer-status').textContent.startsWith('timed_out'), null, { timeout: T });
      result.a_transfer_status = await a.textContent('#transfer-status');
      if (!(await a.isVisible('#transfer-status'))) throw new Error('A\'s page does not show why the transfer failed');
      await textIs(a, 'call-state', 'connected');
      if ((await callUri(a)) !== uri) throw new Error('A no longer holds the call');
      await textIs(a, 'softphone', 'connected');
      await textIs(caller, 'state', 'connected');
      step('transfer ' + result.a_transfer_status + '; the caller is back with A');
      await new Promise((r) => setTimeout(r, 500));
      const [atCallerBack, atABack] = await Promise.all([record(caller, 3), record(a, 3)]);
      fs.writeFileSync(path.join(OUT, 'at_caller_back.pcm'), Buffer.from(atCallerBack, 'base64'));
      fs.writeFileSync(path.join(OUT, 'at_a_back.pcm'), Buffer.from(atABack, 'base64'));
      // Views that arrived after the failure must not have brought back the transfer.
      const later = await a.textContent('#transfer-status');
      if (later !== result.a_transfer_status) throw new Error('A\'s transfer status changed to ' + later);
      step('recorded 3 s at the caller page and at A\'s page after the failed transfer');
      await caller.click('#hangup-btn');
      await a.waitForSelector('#call.hidden', { state: 'attached', timeout: T });
      step('caller hung up; A\'s page cleared');
      if (await b.isVisible('#call')) throw new Error('B\'s page shows a call although the transfer failed');
      result.ok = true;
      return;
    }
    const popB = await popUri(b);
    if (popB !== uri) throw new Error('B popped ' + popB + ', expected ' + uri);
    if ((await b.textContent('#pop-uri')) !== uri) throw new Error('B pop shows another URI');
    const hist = await b.textContent('#pop-history');
    result.b_pop_history = hist;
    if (!hist.includes('alice') || !hist.includes('agent bob')) throw new Error('B pop history: ' + hist);
    step('B popped with the same URI and the transfer history');
    if (BOB_PHONE) {
      if (await b.isVisible('#answer-btn')) throw new Error('B\'s page offers to answer in the page although B is on a phone');
      result.b_pop_hint = await b.textContent('#pop-phone-hint');
      if (!(await b.isVisible('#pop-phone-hint')) || !result.b_pop_hint.startsWith('Ringing on your phone')) throw new Error('B pop hint: ' + result.b_pop_hint);
      // The Rust side picks up B's phone once it sees this file.
      fs.writeFileSync(path.join(OUT, 'b_popped.tmp'), uri);
      fs.renameSync(path.join(OUT, 'b_popped.tmp'), path.join(OUT, 'b_popped'));
      step('B\'s page pops "' + result.b_pop_hint + '"; picking up the phone');
    } else {
      await b.click('#answer-btn');
    }
    if ((await callUri(b)) !== uri) throw new Error('B holds another call');
    if (BOB_PHONE) {
      await b.waitForSelector('#pop.hidden', { state: 'attached', timeout: T });
      result.b_call_device = await b.textContent('#call-device');
      if (!result.b_call_device.startsWith('on your phone')) throw new Error('B call device: ' + result.b_call_device);
      if ((await b.textContent('#softphone')) !== 'idle') throw new Error('B\'s page opened a softphone');
      step('B answered on the phone; B\'s page shows the call ' + result.b_call_device);
    } else {
      await textIs(b, 'softphone', 'connected');
    }
    if (KIND === 'attended') {
      await textIs(a, 'call-state', 'consulting');
      step('attended: B answered the consultation; A is consulting');
      await new Promise((r) => setTimeout(r, 300));
      const [atAc, atBc] = await Promise.all([record(a, 2), BOB_PHONE ? null : record(b, 2)]);
      fs.writeFileSync(path.join(OUT, 'at_a_consult.pcm'), Buffer.from(atAc, 'base64'));
      if (atBc) fs.writeFileSync(path.join(OUT, 'at_b_consult.pcm'), Buffer.from(atBc, 'base64'));
      step('recorded 2 s of the consultation at A\'s page' + (atBc ? ' and B\'s' : ''));
      await a.click('#complete-btn');
    }
    await a.waitForSelector('#call.hidden', { state: 'attached', timeout: T });
    await textIs(a, 'softphone', 'idle');
    if (await a.evaluate(() => A.pc !== null)) throw new Error('A still has a live softphone');
    await caller.waitForFunction(() => document.getElementById('queue-info').textContent.includes('bob'), null, { timeout: T });
    step('B answered (' + (BOB_PHONE ? 'on the phone' : 'in the page, softphone connected') + '); A released (softphone closed); the caller page says with bob');
    if (BOB_PHONE) {
      await b.waitForFunction(() => document.getElementById('call-history').textContent.includes('agent bob'), null, { timeout: T });
      result.b_call_history = await b.textContent('#call-history');
      if (!(await b.isVisible('#call')) || (await b.$eval('#call', (e) => e.dataset.callUri)) !== uri) throw new Error('B\'s page lost the call');
      step('B\'s page holds the call with the history: ' + result.b_call_history);
    }

    await new Promise((r) => setTimeout(r, 500));
    const [atCaller, atB] = await Promise.all([record(caller, 3), BOB_PHONE ? null : record(b, 3)]);
    fs.writeFileSync(path.join(OUT, 'at_caller.pcm'), Buffer.from(atCaller, 'base64'));
    if (atB) fs.writeFileSync(path.join(OUT, 'at_b.pcm'), Buffer.from(atB, 'base64'));
    step('recorded 3 s at the caller page' + (atB ? ' and at B\'s page' : ''));
    result.caller_inbound = await caller.evaluate(async () => {
      const r = await C.pc.getStats();
      let inb = null; const codecs = {};
      r.forEach((v) => { if (v.type === 'inbound-rtp' && v.kind === 'audio') inb = v; if (v.type === 'codec') codecs[v.id] = v.mimeType; });
      return inb && { codec: codecs[inb.codecId], packets: inb.packetsReceived, lost: inb.packetsLost };
    });
    if (!result.caller_inbound || !(result.caller_inbound.packets > 0)) throw new Error('caller page received no RTP: ' + JSON.stringify(result.caller_inbound));

    await caller.click('#hangup-btn');
    await b.waitForSelector('#call.hidden', { state: 'attached', timeout: T });
    step('caller hung up; B\'s page cleared');
    result.ok = true;
  } catch (e) {
    result.ok = false;
    result.error = e.message;
    // What the agents' pages showed when it failed.
    for (const [who, p] of Object.entries(pages)) {
      try {
        result['page_' + who] = await p.evaluate(() => ({
          transfer_status: document.getElementById('transfer-status').textContent,
          call_state: document.getElementById('call-state').textContent,
          log: document.getElementById('log').textContent.slice(-1500),
        }));
      } catch (_) { /* page gone */ }
    }
  } finally {
    result.steps = steps;
    console.log('RESULT ' + JSON.stringify(result));
    for (const br of browsers) { if (br) { try { await br.close(); } catch (_) { /* gone */ } } }
  }
  process.exit(result.ok ? 0 : 1);
})();
