// Headless Chromium against the agent, supervisor and caller pages: a web caller calls the
// support queue, agent A's page pops with the call's URI, A answers in the page, clicks
// transfer to B; B's page pops with the same URI and the transfer history, B answers; then B
// consults A (attended) and completes; the caller hangs up and both pages clear.
// Usage: node agent_transfer.cjs BASE_URL   (PW_DIR: where playwright-core is installed)
'use strict';
const path = require('path');
const { chromium } = require(path.join(process.env.PW_DIR, 'node_modules', 'playwright-core'));

const BASE = process.argv[2];
const T = 10000;
const steps = [];
const step = (s) => { steps.push(s); console.log('step: ' + s); };

async function agentPage(browser, token) {
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  page.on('console', (m) => { if (m.type() === 'error') console.log('[' + token + ' console] ' + m.text()); });
  page.on('pageerror', (e) => console.log('[' + token + ' pageerror] ' + e.message));
  await page.goto(BASE + '/agent');
  await page.fill('#token', token);
  await page.click('#token-btn');
  await page.waitForSelector('#endpoint-row:not(.hidden)', { timeout: T });
  await page.selectOption('#endpoint', 'browser');
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

(async () => {
  const browser = await chromium.launch({
    executablePath: '/usr/lib/chromium/chromium',
    args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--disable-default-apps', '--disable-extensions', '--use-fake-ui-for-media-stream',
      '--use-fake-device-for-media-stream', '--autoplay-policy=no-user-gesture-required',
      '--allow-loopback-in-peer-connection'],
  });
  const result = {};
  try {
    const a = await agentPage(browser, process.env.ALICE_TOKEN);
    const b = await agentPage(browser, process.env.BOB_TOKEN);
    step('both agents logged in');

    const sctx = await browser.newContext();
    const sup = await sctx.newPage();
    await sup.goto(BASE + '/supervisor');
    await sup.fill('#token', process.env.SUPERVISOR_TOKEN);
    await sup.click('#token-btn');
    await sup.waitForSelector('#board:not(.hidden)', { timeout: T });

    const cctx = await browser.newContext();
    const caller = await cctx.newPage();
    caller.on('pageerror', (e) => console.log('[caller pageerror] ' + e.message));
    await caller.goto(BASE + '/caller');
    await caller.waitForFunction(() => document.querySelectorAll('#destination option').length > 0, null, { timeout: T });
    await caller.fill('#caller-name', 'Web Visitor');
    await caller.click('#call-btn');
    await caller.waitForFunction(() => document.getElementById('call-uri').textContent.startsWith('urn:uuid:'), null, { timeout: T });
    const uri = await caller.textContent('#call-uri');
    result.call_uri = uri;
    step('caller placed the call');

    const popA = await popUri(a);
    if (popA !== uri) throw new Error('A popped ' + popA + ', caller has ' + uri);
    if ((await a.textContent('#pop-uri')) !== uri) throw new Error('pop shows another URI');
    if ((await a.textContent('#pop-caller')) !== 'Web Visitor') throw new Error('pop caller is ' + await a.textContent('#pop-caller'));
    step('A popped with the URI');
    await sup.waitForSelector('#calls tr[data-call-uri="' + uri + '"]', { timeout: T });
    step('supervisor lists the call');

    await a.click('#answer-btn');
    if ((await callUri(a)) !== uri) throw new Error('A holds another call');
    await a.waitForFunction(() => document.getElementById('call-state').textContent === 'connected', null, { timeout: T });
    result.a_softphone = await a.textContent('#softphone');
    await caller.waitForFunction(() => document.getElementById('state').textContent === 'connected', null, { timeout: T });
    step('A answered in the page; the caller page says connected');

    await a.click('#dtmf-pad button[data-digit="5"]');
    await a.waitForFunction(() => document.getElementById('dtmf-sent').textContent === '5', null, { timeout: T });
    await a.click('#hold-btn');
    await a.waitForFunction(() => document.getElementById('call-state').textContent === 'held', null, { timeout: T });
    await a.click('#hold-btn');
    await a.waitForFunction(() => document.getElementById('call-state').textContent === 'connected', null, { timeout: T });
    step('A sent a digit, held and resumed');

    // Blind transfer to B from the transfer list.
    await a.waitForFunction(() => !!document.querySelector('#transfer-target option[data-agent="bob"]'), null, { timeout: T });
    const bobValue = await a.$eval('#transfer-target option[data-agent="bob"]', (o) => o.value);
    await a.selectOption('#transfer-target', bobValue);
    await a.selectOption('#transfer-kind', 'blind');
    await a.click('#transfer-btn');
    const popB = await popUri(b);
    if (popB !== uri) throw new Error('B popped ' + popB + ', expected ' + uri);
    const hist = await b.textContent('#pop-history');
    if (!hist.includes('alice') || !hist.includes('agent bob')) throw new Error('B pop history: ' + hist);
    step('B popped with the same URI and the transfer history');
    await b.click('#answer-btn');
    if ((await callUri(b)) !== uri) throw new Error('B holds another call');
    await a.waitForSelector('#call.hidden', { state: 'attached', timeout: T });
    step('B answered; A is released');

    // Attended: B consults A, then completes.
    await b.waitForFunction(() => !!document.querySelector('#transfer-target option[data-agent="alice"]'), null, { timeout: T });
    const aliceValue = await b.$eval('#transfer-target option[data-agent="alice"]', (o) => o.value);
    await b.selectOption('#transfer-target', aliceValue);
    await b.selectOption('#transfer-kind', 'attended');
    await a.waitForFunction(() => document.getElementById('presence-badge').textContent === 'available', null, { timeout: T });
    await b.click('#transfer-btn');
    if ((await popUri(a)) !== uri) throw new Error('A consult pop has another URI');
    await a.click('#answer-btn');
    await b.waitForFunction(() => document.getElementById('call-state').textContent === 'consulting', null, { timeout: T });
    await b.click('#complete-btn');
    await b.waitForSelector('#call.hidden', { state: 'attached', timeout: T });
    if ((await callUri(a)) !== uri) throw new Error('A does not hold the call after complete');
    const histA = await a.textContent('#call-history');
    if (!histA.includes('connected')) throw new Error('A call history: ' + histA);
    step('attended transfer B -> A completed with the same URI');

    await caller.click('#hangup-btn');
    await a.waitForSelector('#call.hidden', { state: 'attached', timeout: T });
    await sup.waitForFunction(() => document.getElementById('call-count').textContent === '0', null, { timeout: T });
    step('caller hung up; pages cleared');
    result.ok = true;
  } catch (e) {
    result.ok = false;
    result.error = e.message;
  } finally {
    result.steps = steps;
    console.log('RESULT ' + JSON.stringify(result));
    await browser.close();
  }
  process.exit(result.ok ? 0 : 1);
})();
