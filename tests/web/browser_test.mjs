#!/usr/bin/env node
// Real browser clients through a real server: headless Chromium (Debian's
// /usr/bin/chromium, driven by playwright-core) runs Strophe.js over
// WebSocket and over BOSH, and Converse.js through its own UI, against an
// XMPP server, with a TCP client (tests/web/peer.py, slixmpp) on the other
// end. Prints TAP, one line per check.
//
// The pages are served by this script from its own origin on loopback, so
// the server's CORS answers (BOSH) and its WebSocket Origin check are met
// for real.
//
// Two ways to name the server (every --name also reads XCM_WEB_NAME):
//   --xcmd-demo PATH   start xcmd-demo: this script picks two free loopback
//                      ports, runs PATH --demo --port TCP --http-port HTTP,
//                      waits for its "is up" line, and uses
//                      ws://127.0.0.1:HTTP/xmpp-websocket and
//                      http://127.0.0.1:HTTP/http-bind/ (--ws-path,
//                      --bosh-path change the paths)
//   --ws-url URL --bosh-url URL --tcp-port PORT [--tcp-host H]
//                      a server that is already running (development:
//                      see tests/web/README.md)
// Common: --domain localhost --user alice:alice --peer bob:bob
//   --transports websocket,bosh  (Strophe runs once per transport)
//   --converse websocket,bosh|none  (Converse runs once per transport
//                      named; default: each of --transports)
//   --out DIR  (the Converse screenshots; default: the current directory)
//   --timeout SECONDS  (per awaited event; default 30)
//
// It skips (TAP "1..0 # SKIP") only when /usr/bin/chromium or
// tests/web/node_modules is missing; .ci/run installs both.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

// ---- options ---------------------------------------------------------------

const defaults = {
  'chromium': '/usr/bin/chromium',
  'python': '/usr/bin/python3',
  'xcmd-demo': '',
  'demo-http-flag': '--http-port',
  'demo-ready': 'is up',
  'ws-path': '/xmpp-websocket',
  'bosh-path': '/http-bind/',
  'ws-url': '',
  'bosh-url': '',
  'tcp-host': '127.0.0.1',
  'tcp-port': '',
  'domain': 'localhost',
  'user': 'alice:alice',
  'peer': 'bob:bob',
  'transports': 'websocket,bosh',
  'converse': '',
  'out': '.',
  'timeout': '30',
};

function parseArgs(argv) {
  const o = {};
  for (const k of Object.keys(defaults)) {
    const env = process.env['XCM_WEB_' + k.toUpperCase().replace(/-/g, '_')];
    o[k] = env !== undefined ? env : defaults[k];
  }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(a);
    if (!m || !(m[1] in defaults)) usage(`unknown argument '${a}'`);
    if (m[2] !== undefined) o[m[1]] = m[2];
    else if (i + 1 < argv.length) o[m[1]] = argv[++i];
    else usage(`${a} needs a value`);
  }
  o.transports = o.transports.split(',').map((s) => s.trim()).filter(Boolean);
  for (const t of o.transports)
    if (t !== 'websocket' && t !== 'bosh')
      usage(`--transports: '${t}' is neither websocket nor bosh`);
  if (o.transports.length === 0) usage('--transports names none');
  o.converse = o.converse === '' ? [...o.transports]
    : o.converse === 'none' ? []
      : o.converse.split(',').map((s) => s.trim()).filter(Boolean);
  for (const t of o.converse)
    if (t !== 'websocket' && t !== 'bosh')
      usage(`--converse: '${t}' is neither websocket nor bosh (or say none)`);
  o.timeoutMs = Number(o.timeout) * 1000;
  if (!(o.timeoutMs > 0)) usage(`--timeout: '${o.timeout}' is not a number`);
  if (!o['xcmd-demo'] && !o['tcp-port'])
    usage('name the server: --xcmd-demo PATH, or --tcp-port with --ws-url/--bosh-url');
  return o;
}

function usage(msg) {
  // A wrong command line is the caller's bug: fail loudly, never skip.
  console.log(`Bail out! browser_test.mjs: ${msg}`);
  process.exit(2);
}

// ---- TAP -------------------------------------------------------------------

let tapN = 0;
let tapFailed = 0;
function check(ok, name, detail) {
  tapN++;
  console.log(`${ok ? 'ok' : 'not ok'} ${tapN} - ${name}`);
  if (!ok) {
    tapFailed++;
    if (detail)
      for (const l of String(detail).split('\n').slice(0, 40))
        console.log(`# ${l}`);
  }
  return ok;
}
function note(msg) {
  console.log(`# ${msg}`);
}

// ---- waiting on events -----------------------------------------------------

// A list of events from one source (the page or the TCP peer) that a test
// waits on: until() resolves as soon as pred accepts what has arrived since
// `from`, and rejects at the deadline, naming what it waited for, or as
// soon as pred throws (the awaited thing can no longer happen).
class Feed {
  constructor(name) {
    this.name = name;
    this.items = [];
    this.waiters = new Set();
  }
  push(ev) {
    this.items.push(ev);
    for (const w of [...this.waiters]) w();
  }
  get mark() {
    return this.items.length;
  }
  until(what, pred, ms, from = 0) {
    return new Promise((resolve, reject) => {
      let timer = null;
      const w = () => {
        let r;
        try {
          r = pred(this.items.slice(from));
        } catch (e) {
          this.waiters.delete(w);
          clearTimeout(timer);
          reject(new Error(`${this.name}: no ${what}: ${e.message}`));
          return;
        }
        if (r) {
          this.waiters.delete(w);
          clearTimeout(timer);
          resolve(r);
        }
      };
      timer = setTimeout(() => {
        this.waiters.delete(w);
        reject(new Error(`${this.name}: no ${what} within ${ms / 1000} s`));
      }, ms);
      this.waiters.add(w);
      w();
    });
  }
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`no ${what} within ${ms / 1000} s`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

const bare = (jid) => (jid || '').split('/')[0];
const short = (s) =>
  s === undefined || s === null ? String(s)
    : s.length > 120 ? JSON.stringify(s.slice(0, 120)) + `... (${s.length} chars)`
      : JSON.stringify(s);

// ---- the static pages ------------------------------------------------------

const types = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript',
  '.mjs': 'text/javascript', '.cjs': 'text/javascript',
  '.css': 'text/css', '.json': 'application/json', '.map': 'application/json',
  '.wasm': 'application/wasm', '.svg': 'image/svg+xml', '.png': 'image/png',
  '.woff': 'font/woff', '.woff2': 'font/woff2', '.ttf': 'font/ttf',
  '.mp3': 'audio/mpeg', '.ogg': 'audio/ogg',
};

// Serves the two pages and node_modules, nothing else, on 127.0.0.1 at a
// port of its own: the pages' origin differs from the XMPP server's.
function startPages() {
  const modules = path.join(here, 'node_modules');
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    let file = null;
    if (url.pathname === '/favicon.ico') {
      res.writeHead(204);
      res.end();
      return;
    }
    if (url.pathname === '/strophe.html' || url.pathname === '/converse.html')
      file = path.join(here, url.pathname.slice(1));
    else if (url.pathname.startsWith('/node_modules/')) {
      const f = path.normalize(
        path.join(modules, decodeURIComponent(url.pathname.slice(14))));
      if (f.startsWith(modules + path.sep)) file = f;
    }
    if (file === null || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found\n');
      return;
    }
    res.writeHead(200, {
      'content-type': types[path.extname(file)] || 'application/octet-stream',
      'cache-control': 'no-store',
    });
    fs.createReadStream(file).pipe(res);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () =>
      resolve({ server, origin: `http://127.0.0.1:${server.address().port}` }));
  });
}

// ---- processes -------------------------------------------------------------

// Whatever this script started dies with it, however it ends.
const children = [];
process.on('exit', () => {
  for (const c of children)
    if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

// xcmd-demo on two ports of ours; resolves once its log says the upstream
// is up (the listeners are bound before that).
async function startDemo(o) {
  const tcpPort = await freePort();
  const httpPort = await freePort();
  const args = ['--demo', '--port', String(tcpPort), o['demo-http-flag'],
    String(httpPort)];
  const proc = spawn(o['xcmd-demo'], args, { stdio: ['ignore', 'ignore', 'pipe'] });
  children.push(proc);
  const log = [];
  const feed = new Feed('xcmd-demo');
  const exited = new Promise((resolve) => proc.on('exit', (code, sig) => {
    feed.push({ exit: code, signal: sig });
    resolve({ code, signal: sig });
  }));
  proc.on('error', (e) => feed.push({ exit: -1, error: String(e) }));
  readline.createInterface({ input: proc.stderr }).on('line', (l) => {
    log.push(l);
    feed.push({ line: l });
  });
  try {
    await feed.until(`'${o['demo-ready']}' line`, (evs) => {
      const end = evs.find((e) => 'exit' in e);
      if (end) throw new Error(`it exited (${end.exit ?? end.signal})`);
      return evs.some((e) => e.line && e.line.includes(o['demo-ready']));
    }, o.timeoutMs);
  } catch (e) {
    console.log(`Bail out! ${o['xcmd-demo']} ${args.join(' ')} did not come up` +
      ` (${e.message})`);
    for (const l of log.slice(-30)) note(l);
    proc.kill('SIGKILL');
    process.exit(1);
  }
  note(`xcmd-demo: client port ${tcpPort}, HTTP port ${httpPort}`);
  return {
    proc, log, exited, tcpPort, httpPort,
    ws: `ws://127.0.0.1:${httpPort}${o['ws-path']}`,
    bosh: `http://127.0.0.1:${httpPort}${o['bosh-path']}`,
  };
}

// The TCP client: peer.py, one JSON object a line each way.
function startPeer(o, port) {
  const proc = spawn(o.python, [path.join(here, 'peer.py'), '--host',
    o['tcp-host'], '--port', String(port), '--domain', o.domain,
    '--user', o.peer], { stdio: ['pipe', 'pipe', 'pipe'] });
  children.push(proc);
  const feed = new Feed('TCP peer');
  const stderr = [];
  readline.createInterface({ input: proc.stdout }).on('line', (l) => {
    try {
      feed.push(JSON.parse(l));
    } catch (e) {
      stderr.push(`stdout: ${l}`);
    }
  });
  readline.createInterface({ input: proc.stderr }).on('line', (l) =>
    stderr.push(l));
  const exited = new Promise((resolve) =>
    proc.on('exit', (code, sig) => {
      feed.push({ ev: 'exit', code, signal: sig });
      resolve({ code, signal: sig });
    }));
  return {
    proc, feed, stderr, exited,
    send: (cmd) => proc.stdin.write(JSON.stringify(cmd) + '\n'),
  };
}

// ---- the checks ------------------------------------------------------------

// Non-ASCII (two-byte, three-byte, a surrogate pair) and every character
// XML escapes, as text, in both directions.
const SPECIAL = "<b>&amp; \"quoted\" 'apos' > \u00fcmlaut \u2603 \u{1F600} </body>";
// 60 KB: mostly ASCII with escaped characters and non-ASCII spread through.
function bigBody(tag) {
  const unit = `${tag} 0123456789 <&> \u00e9\u2603 abcdefghijklmnopqrstuvwxyz\n`;
  let s = '';
  while (s.length < 60 * 1024) s += unit;
  return s.slice(0, 60 * 1024);
}

// A browser context that reaches loopback only: anything else a page asks
// for (Converse's login form shows its sponsors' logos from the web) is
// refused before it leaves the browser, and counted.
async function loopbackContext(browser, options, outside) {
  const context = await browser.newContext(options);
  await context.route(/^(?!(?:https?|wss?):\/\/(?:127\.0\.0\.1|localhost|\[::1\])[:/])/,
    (route) => {
      outside.push(route.request().url());
      return route.abort('blockedbyclient');
    });
  return context;
}

async function stropheRun(o, browser, origin, transport, url, peer, peerJid) {
  const label = `strophe ${transport}`;
  const T = o.timeoutMs;
  const feed = new Feed(`browser (${label})`);
  const consoleLines = [];
  const context = await loopbackContext(browser, {}, []);
  const page = await context.newPage();
  page.on('console', (m) => {
    if (!m.text().includes('ERR_BLOCKED_BY_CLIENT'))
      consoleLines.push(`console.${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => consoleLines.push(`page error: ${e.message}`));
  await page.exposeFunction('xtEvent', (ev) => feed.push(ev));
  const fail = (name, err) => check(false, `${label}: ${name}`,
    [err && err.message, ...feed.items.filter((e) => e.ev === 'status')
      .map((e) => `status ${e.status} ${e.condition || ''}`),
    ...consoleLines.slice(-15)].filter(Boolean).join('\n'));
  const [user, password] = o.user.split(':');
  const myBare = `${user}@${o.domain}`;
  const peerBare = bare(peerJid);
  try {
    await page.goto(`${origin}/strophe.html`);
    let jid;
    try {
      jid = await withTimeout(page.evaluate(([u, j, p]) => window.xt.connect(u, j, p),
        [url, `${myBare}/strophe-${transport}`, password]), T, 'login');
    } catch (e) {
      fail(`logs in as ${myBare} over ${url}`, e);
      return;
    }
    check(bare(jid) === myBare, `${label}: logs in as ${myBare} over ${url}`,
      `bound ${jid}`);

    let roster = null;
    try {
      roster = await withTimeout(page.evaluate(() => window.xt.roster()), T,
        'roster result');
    } catch (e) {
      roster = [String(e.message)];
    }
    check(roster.includes(peerBare), `${label}: the roster lists ${peerBare}`,
      JSON.stringify(roster));

    // Presence both ways: the browser's initial presence reaches the TCP
    // peer, and the server tells the browser the peer is online.
    let pm = peer.feed.mark;
    await page.evaluate(() => window.xt.presence());
    try {
      await Promise.all([
        feed.until(`available presence from ${peerBare}`, (evs) => evs.some(
          (e) => e.ev === 'presence' && bare(e.from) === peerBare &&
            e.type === 'available'), T),
        peer.feed.until(`available presence from ${jid}`, (evs) => evs.some(
          (e) => e.ev === 'presence' && e.from === jid &&
            e.type === 'available'), T, pm),
      ]);
      check(true, `${label}: presence seen both ways`);
    } catch (e) {
      fail('presence seen both ways', e);
    }

    // One message each way, compared whole.
    const oneWay = async (name, body) => {
      let pm2 = peer.feed.mark;
      await page.evaluate(([to, b]) => window.xt.send(to, b), [peerJid, body]);
      try {
        const got = await peer.feed.until(`message from ${jid}`, (evs) =>
          evs.find((e) => e.ev === 'message' && e.from === jid), T, pm2);
        check(got.body === body, `${label}: browser to TCP: ${name}`,
          `sent ${short(body)}\ngot  ${short(got.body)}`);
      } catch (e) {
        fail(`browser to TCP: ${name}`, e);
      }
      const bm = feed.mark;
      peer.send({ op: 'send', to: jid, body });
      try {
        const got = await feed.until(`message from ${peerJid}`, (evs) =>
          evs.find((e) => e.ev === 'message' && e.from === peerJid), T, bm);
        check(got.body === body, `${label}: TCP to browser: ${name}`,
          `sent ${short(body)}\ngot  ${short(got.body)}`);
      } catch (e) {
        fail(`TCP to browser: ${name}`, e);
      }
    };
    await oneWay('non-ASCII and escaped characters intact', SPECIAL);
    await oneWay('a 60 KB body whole', bigBody(label));

    // 200 in a row, each way; the order must be kept.
    const N = 200;
    const prefix = `${transport}-order-`;
    const want = Array.from({ length: N }, (_, i) => prefix + i);
    const inOrder = (evs, from) => evs.filter((e) => e.ev === 'message' &&
      e.from === from && (e.body || '').startsWith(prefix)).map((e) => e.body);
    pm = peer.feed.mark;
    await page.evaluate(([to, p, n]) => window.xt.sendMany(to, p, n),
      [peerJid, prefix, N]);
    try {
      const got = await peer.feed.until(`${N} messages`, (evs) => {
        const b = inOrder(evs, jid);
        return b.length >= N ? b : null;
      }, T, pm);
      check(JSON.stringify(got) === JSON.stringify(want),
        `${label}: browser to TCP: ${N} in a row, in order`,
        `got ${got.slice(0, 10).join(' ')} ...`);
    } catch (e) {
      fail(`browser to TCP: ${N} in a row, in order`,
        new Error(`${e.message}; got ${inOrder(peer.feed.items.slice(pm), jid).length}`));
    }
    let bm = feed.mark;
    peer.send({ op: 'send_many', to: jid, prefix, count: N });
    try {
      const got = await feed.until(`${N} messages`, (evs) => {
        const b = inOrder(evs, peerJid);
        return b.length >= N ? b : null;
      }, T, bm);
      check(JSON.stringify(got) === JSON.stringify(want),
        `${label}: TCP to browser: ${N} in a row, in order`,
        `got ${got.slice(0, 10).join(' ')} ...`);
    } catch (e) {
      fail(`TCP to browser: ${N} in a row, in order`,
        new Error(`${e.message}; got ${inOrder(feed.items.slice(bm), peerJid).length}`));
    }

    // Close: Strophe sends unavailable presence and the transport's close;
    // the session ends cleanly and the peer sees the browser go.
    pm = peer.feed.mark;
    bm = feed.mark;
    await page.evaluate(() => window.xt.close());
    try {
      await Promise.all([
        feed.until('DISCONNECTED status', (evs) => evs.some(
          (e) => e.ev === 'status' && e.status === 'DISCONNECTED'), T, bm),
        peer.feed.until(`unavailable presence from ${jid}`, (evs) => evs.some(
          (e) => e.ev === 'presence' && e.from === jid &&
            e.type === 'unavailable'), T, pm),
      ]);
      const bad = feed.items.filter((e) => e.ev === 'status' &&
        ['CONNFAIL', 'ERROR', 'CONNTIMEOUT', 'AUTHFAIL'].includes(e.status));
      check(bad.length === 0, `${label}: closes cleanly, the peer sees it go`,
        bad.map((e) => `status ${e.status} ${e.condition || ''}`).join('\n'));
    } catch (e) {
      fail('closes cleanly, the peer sees it go', e);
    }
  } finally {
    await context.close();
  }
}

async function converseRun(o, browser, origin, transport, url, peer, peerJid) {
  const label = `converse ${transport}`;
  const T = o.timeoutMs;
  const consoleLines = [];
  const context = await loopbackContext(browser,
    { viewport: { width: 1280, height: 800 } }, []);
  const page = await context.newPage();
  page.on('console', (m) => {
    if (!m.text().includes('ERR_BLOCKED_BY_CLIENT'))
      consoleLines.push(`console.${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => consoleLines.push(`page error: ${e.message}`));
  const fail = (name, err) => check(false, `${label}: ${name}`,
    [err && err.message, ...consoleLines.slice(-20)].filter(Boolean).join('\n'));
  const [user, password] = o.user.split(':');
  const myBare = `${user}@${o.domain}`;
  const peerBare = bare(peerJid);
  const shot = path.resolve(o.out, `converse-${transport}.png`);
  try {
    const q = transport === 'websocket' ? 'ws' : 'bosh';
    await page.goto(`${origin}/converse.html?${q}=${encodeURIComponent(url)}`);
    // Log in the way a person does: the form, then the button.
    const pm = peer.feed.mark;
    let jid;
    try {
      await page.locator('#converse-login-jid').fill(myBare, { timeout: T });
      await page.locator('#converse-login-password').fill(password, { timeout: T });
      await page.locator('#converse-login button[type=submit]').click({ timeout: T });
      const ev = await peer.feed.until(`available presence from ${myBare}`,
        (evs) => evs.find((e) => e.ev === 'presence' &&
          bare(e.from) === myBare && e.type === 'available'), T, pm);
      jid = ev.from;
      check(true, `${label}: logs in through the login form over ${url}` +
        ' (the TCP peer sees it online)');
    } catch (e) {
      fail(`logs in through the login form over ${url}`, e);
      await page.screenshot({ path: shot }).catch(() => {});
      note(`screenshot: ${shot}`);
      return;
    }
    // The roster is fetched and shown; the contact is online.
    const contact = page.locator('converse-roster a.open-chat')
      .filter({ hasText: new RegExp(o.peer.split(':')[0], 'i') }).first();
    try {
      await contact.waitFor({ state: 'visible', timeout: T });
      check(true, `${label}: the roster shows ${peerBare}`);
    } catch (e) {
      fail(`the roster shows ${peerBare}`, e);
      return;
    }
    // A chat through the UI: type, Enter, the peer gets it.
    const out = 'Hello from Converse \u2603 <tag> & "quotes" \u{1F600}';
    try {
      await contact.click({ timeout: T });
      const box = page.locator('textarea.chat-textarea').first();
      await box.fill(out, { timeout: T });
      const m = peer.feed.mark;
      await box.press('Enter', { timeout: T });
      const got = await peer.feed.until(`message from ${jid}`, (evs) =>
        evs.find((e) => e.ev === 'message' && e.from === jid && e.body), T, m);
      check(got.body === out, `${label}: a message typed in the chat reaches the TCP peer`,
        `sent ${short(out)}\ngot  ${short(got.body)}`);
    } catch (e) {
      fail('a message typed in the chat reaches the TCP peer', e);
    }
    const back = 'Reply over TCP: <ok> & \u00fcber \u2603';
    try {
      peer.send({ op: 'send', to: jid, body: back });
      await page.locator('.chat-msg__text').filter({ hasText: back }).first()
        .waitFor({ state: 'visible', timeout: T });
      check(true, `${label}: the TCP peer's reply shows in the chat`);
    } catch (e) {
      fail('the TCP peer\'s reply shows in the chat', e);
    }
    try {
      await page.screenshot({ path: shot, fullPage: false });
      check(fs.statSync(shot).size > 0, `${label}: screenshot kept`);
      note(`screenshot: ${shot}`);
    } catch (e) {
      fail('screenshot kept', e);
    }
  } finally {
    await context.close();
  }
}

// ---- main ------------------------------------------------------------------

async function main() {
  const o = parseArgs(process.argv.slice(2));

  // The only skips: no browser, or the npm packages not installed.
  try {
    fs.accessSync(o.chromium, fs.constants.X_OK);
  } catch {
    console.log(`1..0 # SKIP ${o.chromium} is missing (apt-get install chromium)`);
    return 'skip';
  }
  if (!fs.existsSync(path.join(here, 'node_modules', 'playwright-core')) ||
      !fs.existsSync(path.join(here, 'node_modules', 'strophe.js')) ||
      !fs.existsSync(path.join(here, 'node_modules', 'converse.js'))) {
    console.log(`1..0 # SKIP ${path.join(here, 'node_modules')} is missing ` +
      `(npm ci --prefix ${here} --no-audit --no-fund --ignore-scripts)`);
    return 'skip';
  }
  const { chromium } = await import('playwright-core');
  fs.mkdirSync(o.out, { recursive: true });

  let demo = null;
  const urls = { websocket: o['ws-url'], bosh: o['bosh-url'] };
  let tcpPort = Number(o['tcp-port']);
  if (o['xcmd-demo']) {
    demo = await startDemo(o);
    urls.websocket = demo.ws;
    urls.bosh = demo.bosh;
    tcpPort = demo.tcpPort;
  }
  for (const t of new Set([...o.transports, ...o.converse]))
    if (!urls[t])
      usage(`no URL for ${t}: --${t === 'websocket' ? 'ws' : 'bosh'}-url`);

  const pages = await startPages();
  const peer = startPeer(o, tcpPort);
  let browser = null;
  try {
    let ready;
    try {
      ready = await peer.feed.until('login', (evs) => {
        const f = evs.find((e) => e.ev === 'failed' || e.ev === 'exit');
        if (f) throw new Error(JSON.stringify(f));
        return evs.find((e) => e.ev === 'ready');
      }, o.timeoutMs);
    } catch (e) {
      ready = null;
    }
    if (!check(ready !== null, `the TCP peer (${o.peer.split(':')[0]}, slixmpp) ` +
        `logs in on port ${tcpPort}`,
    [JSON.stringify(peer.feed.items.slice(-3)), ...peer.stderr.slice(-20)].join('\n')))
      return 1;
    browser = await chromium.launch({
      executablePath: o.chromium,
      // Names resolve to nothing: the browser stays on loopback (pages
      // and servers are named by address).
      args: ['--no-sandbox', '--disable-dev-shm-usage',
        '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost'],
      headless: true,
      timeout: o.timeoutMs * 2,
    });
    note(`chromium ${browser.version()}, pages at ${pages.origin}`);

    // A run that throws (a page that did not load, a browser that went
    // away) fails once and the others still run.
    const runs = [...o.transports.map((t) => ['strophe', stropheRun, t]),
      ...o.converse.map((t) => ['converse', converseRun, t])];
    for (const [name, run, t] of runs) {
      try {
        await run(o, browser, pages.origin, t, urls[t], peer, ready.jid);
      } catch (e) {
        check(false, `${name} ${t}: runs to the end`,
          String(e && e.stack ? e.stack : e).split('\n').slice(0, 6).join('\n'));
      }
    }

    peer.send({ op: 'quit' });
    try {
      await peer.feed.until('closed stream', (evs) =>
        evs.some((e) => e.ev === 'closed'), o.timeoutMs);
      const { code } = await withTimeout(peer.exited, o.timeoutMs, 'peer exit');
      check(code === 0, 'the TCP peer closes its stream cleanly',
        peer.stderr.slice(-20).join('\n'));
    } catch (e) {
      check(false, 'the TCP peer closes its stream cleanly',
        [e.message, ...peer.stderr.slice(-20)].join('\n'));
    }
  } finally {
    if (browser) await browser.close();
    pages.server.close();
    peer.proc.kill('SIGKILL');
    if (demo) {
      demo.proc.kill('SIGTERM');
      let r;
      try {
        r = await withTimeout(demo.exited, o.timeoutMs, 'xcmd-demo exit');
      } catch (e) {
        demo.proc.kill('SIGKILL');
        r = { code: null, signal: 'timeout' };
      }
      check(r.code === 0, 'xcmd-demo stops cleanly on SIGTERM',
        [`exit ${r.code} ${r.signal || ''}`, ...demo.log.slice(-20)].join('\n'));
      // xcmd's log lines: "STAMP WHO LEVEL: MESSAGE"; the upstream names
      // each protocol violation it saw.
      const bad = demo.log.filter((l) => /^\S+ \S+ error: /.test(l) ||
        /protocol violation|broke the protocol/.test(l));
      check(bad.length === 0,
        'xcmd-demo logged no error, its upstream saw no protocol violation',
        bad.slice(0, 10).join('\n'));
    }
  }
  return 0;
}

let status = 1;
try {
  status = await main();
} catch (e) {
  console.log(`Bail out! ${e && e.stack ? e.stack.split('\n').slice(0, 5).join(' | ') : e}`);
  status = 1;
}
if (status === 'skip') process.exit(0);
console.log(`1..${tapN}`);
process.exit(tapFailed > 0 ? 1 : status);
