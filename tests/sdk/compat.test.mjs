// compat.test.mjs — the official `openai` npm SDK against the shade gateway.
//
// Starts, on free ports: four `shade sim` processes (two identical healthy
// ones with the same seed, one failing every request with a 500, one
// answering every request with a 429) and `shade serve` in front of them,
// plus a model whose only backend is a closed port.  Every case goes
// through the SDK exactly as an application would; the healthy sims are
// deterministic, so answers through the gateway are compared with the same
// call made directly to a sim.
//
// Run with tests/sdk/run.sh (needs node_modules from the lockfile).
// SHADE_BIN selects the binary (default: bin/shade of this repository).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import OpenAI, {
  APIError,
  AuthenticationError,
  BadRequestError,
  InternalServerError,
  NotFoundError,
  PermissionDeniedError,
  RateLimitError,
} from 'openai';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..', '..');
const BIN = path.resolve(ROOT, process.env.SHADE_BIN || 'bin/shade');
const HOST = '127.0.0.1';
const SEED = '1234';
const MODEL = 'demo';
const WATCHDOG_MS = 55_000; // the whole file must finish well under 60 s
const STEP_TIMEOUT_MS = 10_000; // one SDK call
const MAX_TOKENS = 24;

// ---------------------------------------------------------------------------
// processes: everything we spawn is recorded here and killed by PID

const procs = [];

function alive(rec) {
  return rec.child.exitCode === null && rec.child.signalCode === null && !rec.spawnError;
}

function startProc(name, args) {
  const child = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const rec = { name, child, args, out: '', spawnError: null };
  const keep = (d) => {
    rec.out += d.toString();
    if (rec.out.length > 20000) rec.out = rec.out.slice(-20000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  child.on('error', (e) => {
    rec.spawnError = e;
  });
  procs.push(rec);
  return rec;
}

// SIGTERM, then SIGKILL if still alive after 3 s.
function stopProc(rec) {
  if (!alive(rec) || !rec.child.pid) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      try {
        process.kill(rec.child.pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }, 3000);
    rec.child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    try {
      process.kill(rec.child.pid, 'SIGTERM');
    } catch {
      clearTimeout(timer);
      resolve();
    }
  });
}

function stopAll() {
  return Promise.all(procs.map(stopProc));
}

// Last resort when the test process itself goes away: no waiting possible.
function killAllNow() {
  for (const rec of procs) {
    if (alive(rec) && rec.child.pid) {
      try {
        process.kill(rec.child.pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
  }
}

process.on('exit', killAllNow);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    stopAll().finally(() => process.exit(1));
  });
}
setTimeout(() => {
  process.stderr.write(`compat.test.mjs: watchdog: still running after ${WATCHDOG_MS} ms, giving up\n`);
  dumpLogs();
  stopAll().finally(() => process.exit(1));
}, WATCHDOG_MS).unref();

function dumpLogs() {
  for (const rec of procs) {
    const state = alive(rec)
      ? 'running'
      : rec.spawnError
        ? `spawn failed: ${rec.spawnError.message}`
        : `exited code=${rec.child.exitCode} signal=${rec.child.signalCode}`;
    process.stderr.write(`--- ${rec.name} (pid ${rec.child.pid}, ${state}): ${BIN} ${rec.args.join(' ')}\n`);
    if (rec.out) process.stderr.write(rec.out.split('\n').slice(-30).join('\n') + '\n');
  }
}

// ---------------------------------------------------------------------------
// ports and readiness

// n distinct free ports: all listeners stay open until every port is known.
async function freePorts(n) {
  const servers = [];
  try {
    for (let i = 0; i < n; i++) {
      const s = net.createServer();
      await new Promise((resolve, reject) => {
        s.once('error', reject);
        s.listen(0, HOST, resolve);
      });
      servers.push(s);
    }
    return servers.map((s) => s.address().port);
  } finally {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function tcpReady(port) {
  return new Promise((resolve) => {
    const sock = net.connect({ host: HOST, port });
    sock.once('connect', () => {
      sock.destroy();
      resolve(true);
    });
    sock.once('error', () => resolve(false));
    sock.setTimeout(500, () => {
      sock.destroy();
      resolve(false);
    });
  });
}

async function waitFor(rec, what, probe, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!alive(rec)) {
      dumpLogs();
      throw new Error(`${rec.name} exited before ${what}`);
    }
    if (await probe()) return;
    await sleep(50);
  }
  dumpLogs();
  throw new Error(`${rec.name}: ${what} not reached within ${timeoutMs} ms`);
}

async function healthz(port) {
  try {
    const res = await fetch(`http://${HOST}:${port}/healthz`, { signal: AbortSignal.timeout(1000) });
    await res.text();
    return res.status === 200;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------
// fixture

let ports; // { gw, simA, simB, simErr, simLimit, closed }
let tmpDir;

function client(opts = {}) {
  return new OpenAI({
    apiKey: 'sk-shade-test',
    baseURL: `http://${HOST}:${ports.gw}/v1`,
    maxRetries: 0,
    timeout: STEP_TIMEOUT_MS,
    ...opts,
  });
}

function simClient(port = ports.simA) {
  return new OpenAI({
    apiKey: 'sk-shade-test',
    baseURL: `http://${HOST}:${port}/v1`,
    maxRetries: 0,
    timeout: STEP_TIMEOUT_MS,
  });
}

before(async () => {
  assert.ok(fs.existsSync(BIN), `shade binary not found: ${BIN} (run make, or set SHADE_BIN)`);
  const [gw, simA, simB, simErr, simLimit, closed] = await freePorts(6);
  ports = { gw, simA, simB, simErr, simLimit, closed };

  const simArgs = (port, ...extra) => [
    'sim', '--listen', `${HOST}:${port}`, '--seed', SEED, '--ttft-ms', '5', '--tps', '2000',
    '--max-tokens', '64', '--grace-ms', '500', ...extra,
  ];
  const sims = [
    startProc('sim-a', simArgs(simA)),
    startProc('sim-b', simArgs(simB)),
    startProc('sim-err', simArgs(simErr, '--error-rate', '1')),
    startProc('sim-limit', simArgs(simLimit, '--rate-limit-rate', '1')),
  ];
  const simPorts = [simA, simB, simErr, simLimit];
  await Promise.all(sims.map((rec, i) => waitFor(rec, `listening on ${simPorts[i]}`, () => tcpReady(simPorts[i]))));

  tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'shade-sdk-'));
  const cfg = path.join(tmpDir, 'gateway.yaml');
  fs.writeFileSync(
    cfg,
    `server:
  listen: ${HOST}:${gw}
  workers: 1
  shutdown_timeout: 2s
  log_level: warn
  expose_backend_header: true
models:
  - name: ${MODEL}
    balance: round_robin
    backends:
      - url: http://${HOST}:${simA}
        name: sim-a
      - url: http://${HOST}:${simB}
        name: sim-b
  - name: always-500
    backends:
      - url: http://${HOST}:${simErr}
        name: sim-err
  - name: always-429
    backends:
      - url: http://${HOST}:${simLimit}
        name: sim-limit
  - name: dead
    backends:
      - url: http://${HOST}:${closed}
        name: closed-port
        connect_timeout: 1s
`,
  );
  const gwRec = startProc('gateway', ['serve', '-c', cfg]);
  await waitFor(gwRec, 'GET /healthz = 200', () => healthz(gw));
});

after(async () => {
  const died = procs.filter((rec) => !alive(rec));
  if (died.length) {
    process.stderr.write(`compat.test.mjs: ${died.map((r) => r.name).join(', ')} exited during the run\n`);
    dumpLogs();
  }
  await stopAll();
  if (tmpDir) fs.rmSync(tmpDir, { recursive: true, force: true });
  assert.deepEqual(
    died.map((r) => r.name),
    [],
    'every process started must still be running at the end',
  );
});

// ---------------------------------------------------------------------------
// helpers

const CHAT = {
  model: MODEL,
  messages: [
    { role: 'system', content: 'You are a test.' },
    { role: 'user', content: 'Say something deterministic about gateways.' },
  ],
  max_tokens: MAX_TOKENS,
};

const PROMPT = 'Once upon a time, a gateway';

function assertUsage(usage, where) {
  assert.ok(usage, `${where}: usage present`);
  for (const k of ['prompt_tokens', 'completion_tokens', 'total_tokens']) {
    assert.equal(typeof usage[k], 'number', `${where}: usage.${k} is a number`);
    assert.ok(Number.isInteger(usage[k]) && usage[k] >= 0, `${where}: usage.${k} = ${usage[k]}`);
  }
  assert.ok(usage.prompt_tokens > 0, `${where}: prompt_tokens > 0`);
  assert.ok(usage.completion_tokens > 0, `${where}: completion_tokens > 0`);
  assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens, `${where}: total = prompt + completion`);
}

function assertRequestId(headers, where) {
  const id = headers.get('x-request-id');
  assert.ok(id && id.length > 0, `${where}: x-request-id header present`);
  return id;
}

// Run fn, which must reject with an APIError; returns the error.
async function apiError(fn) {
  try {
    await fn();
  } catch (e) {
    if (!(e instanceof APIError)) throw e;
    return e;
  }
  assert.fail('expected the call to fail with an APIError');
}

function assertErrorBody(err, where) {
  assert.ok(err.error && typeof err.error === 'object', `${where}: OpenAI error body {"error": {...}}`);
  assert.equal(typeof err.error.message, 'string', `${where}: error.message is a string`);
  assert.ok(err.error.message.length > 0, `${where}: error.message non-empty`);
  assert.ok('type' in err.error, `${where}: error.type present`);
  assertRequestId(err.headers, where);
  assert.equal(err.requestID, err.headers.get('x-request-id'), `${where}: SDK exposes requestID`);
}

async function collectChat(stream) {
  let content = '';
  const chunks = [];
  for await (const chunk of stream) {
    chunks.push(chunk);
    for (const c of chunk.choices) content += c.delta?.content ?? '';
  }
  return { content, chunks };
}

// ---------------------------------------------------------------------------
// cases

describe('openai SDK through shade', { timeout: 45_000 }, () => {
  let reference; // non-streaming chat completion through the gateway

  test('models.list returns every configured public model', async () => {
    const ids = [];
    for await (const m of client().models.list()) ids.push(m.id);
    for (const name of [MODEL, 'always-500', 'always-429', 'dead'])
      assert.ok(ids.includes(name), `models.list has ${name}: ${JSON.stringify(ids)}`);
    assert.equal(ids.length, 4, `exactly the configured models: ${JSON.stringify(ids)}`);
  });

  test('chat.completions.create (non-streaming) matches the sim called directly', async () => {
    const direct = await simClient().chat.completions.create(CHAT);
    const seen = new Set();
    // round robin over two sims with the same seed: both give the same answer
    for (let i = 0; i < 2; i++) {
      const { data, response, request_id } = await client().chat.completions.create(CHAT).withResponse();
      assert.equal(response.status, 200);
      const id = assertRequestId(response.headers, 'chat');
      assert.equal(request_id, id, 'SDK request_id is the x-request-id header');
      seen.add(response.headers.get('x-shade-backend'));
      assert.equal(data.object, 'chat.completion');
      assert.ok(Array.isArray(data.choices) && data.choices.length === 1, 'one choice');
      const choice = data.choices[0];
      assert.equal(choice.message.role, 'assistant');
      assert.equal(typeof choice.message.content, 'string');
      assert.ok(choice.message.content.length > 0, 'content non-empty');
      assert.ok(['stop', 'length'].includes(choice.finish_reason), `finish_reason: ${choice.finish_reason}`);
      assertUsage(data.usage, 'chat');
      assert.ok(data.usage.completion_tokens <= MAX_TOKENS, 'max_tokens honoured');
      assert.equal(choice.message.content, direct.choices[0].message.content, 'same content as the sim directly');
      assert.equal(choice.finish_reason, direct.choices[0].finish_reason, 'same finish_reason as the sim directly');
      assert.deepEqual(data.usage, direct.usage, 'same usage as the sim directly');
      reference = data;
    }
    assert.deepEqual([...seen].sort(), ['sim-a', 'sim-b'], 'round robin reached both backends');
  });

  test('chat.completions.create stream: deltas concatenate to the non-streaming content', async () => {
    assert.ok(reference, 'needs the non-streaming case');
    const { data: stream, response } = await client()
      .chat.completions.create({ ...CHAT, stream: true })
      .withResponse();
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type') ?? '', /^text\/event-stream/);
    assertRequestId(response.headers, 'stream');
    const { content, chunks } = await collectChat(stream);
    assert.ok(chunks.length > 1, `several chunks (${chunks.length})`);
    for (const c of chunks) assert.equal(c.object, 'chat.completion.chunk');
    assert.equal(content, reference.choices[0].message.content);
    const finishes = chunks.flatMap((c) => c.choices.map((x) => x.finish_reason)).filter((f) => f != null);
    assert.deepEqual(finishes, [reference.choices[0].finish_reason], 'exactly one finish_reason, same as non-streaming');
    assert.ok(chunks.every((c) => c.usage == null), 'no usage without stream_options.include_usage');
  });

  test('chat.completions.create stream with include_usage: last chunk carries usage', async () => {
    assert.ok(reference, 'needs the non-streaming case');
    const stream = await client().chat.completions.create({
      ...CHAT,
      stream: true,
      stream_options: { include_usage: true },
    });
    const { content, chunks } = await collectChat(stream);
    assert.equal(content, reference.choices[0].message.content);
    const last = chunks.at(-1);
    assertUsage(last.usage, 'stream usage chunk');
    assert.deepEqual(last.choices, [], 'usage chunk has empty choices');
    assert.deepEqual(last.usage, reference.usage, 'same usage as non-streaming');
    assert.ok(chunks.slice(0, -1).every((c) => c.usage == null), 'only the last chunk has usage');
  });

  test('completions.create (legacy), non-streaming and streaming', async () => {
    const req = { model: MODEL, prompt: PROMPT, max_tokens: MAX_TOKENS };
    const { data, response } = await client().completions.create(req).withResponse();
    assertRequestId(response.headers, 'completions');
    assert.equal(data.object, 'text_completion');
    assert.equal(data.choices.length, 1);
    const text = data.choices[0].text;
    assert.equal(typeof text, 'string');
    assert.ok(text.length > 0, 'text non-empty');
    assert.ok(['stop', 'length'].includes(data.choices[0].finish_reason), `finish_reason: ${data.choices[0].finish_reason}`);
    assertUsage(data.usage, 'completions');

    const direct = await simClient(ports.simB).completions.create(req);
    assert.equal(text, direct.choices[0].text, 'same text as the sim directly');

    const stream = await client().completions.create({ ...req, stream: true });
    let streamed = '';
    let n = 0;
    for await (const chunk of stream) {
      n++;
      assert.equal(chunk.object, 'text_completion');
      for (const c of chunk.choices) streamed += c.text ?? '';
    }
    assert.ok(n > 1, `several chunks (${n})`);
    assert.equal(streamed, text, 'streamed text equals the non-streaming text');
  });

  test('embeddings.create with a string and with an array of strings', async () => {
    const one = await client().embeddings.create({ model: MODEL, input: 'hello gateway' });
    assert.equal(one.object, 'list');
    assert.equal(one.data.length, 1);
    const dim = one.data[0].embedding.length;
    assert.ok(dim > 0, 'vector non-empty');
    assert.ok(one.data[0].embedding.every((x) => typeof x === 'number' && Number.isFinite(x)), 'finite numbers');
    assert.equal(one.data[0].index, 0);
    assert.ok(one.usage && one.usage.prompt_tokens > 0, 'usage.prompt_tokens > 0');

    const inputs = ['alpha', 'beta gamma', 'delta epsilon zeta'];
    const many = await client().embeddings.create({ model: MODEL, input: inputs });
    assert.equal(many.data.length, inputs.length, 'one vector per input');
    many.data.forEach((d, i) => {
      assert.equal(d.index, i, 'indices in order');
      assert.equal(d.embedding.length, dim, 'same dimension for every input');
    });
    assert.notDeepEqual(many.data[0].embedding, many.data[1].embedding, 'different inputs, different vectors');

    // the SDK asks for base64 by default; the float form must decode to the same vector
    const asFloat = await client().embeddings.create({ model: MODEL, input: 'hello gateway', encoding_format: 'float' });
    assert.equal(asFloat.data[0].embedding.length, dim);
    asFloat.data[0].embedding.forEach((x, i) =>
      assert.ok(Math.abs(x - one.data[0].embedding[i]) < 1e-6, `float/base64 agree at ${i}`),
    );
  });

  test('unknown model -> NotFoundError 404 model_not_found', async () => {
    const err = await apiError(() => client().chat.completions.create({ ...CHAT, model: 'no-such-model' }));
    assert.ok(err instanceof NotFoundError, `NotFoundError, got ${err.constructor.name}`);
    assert.equal(err.status, 404);
    assert.equal(err.code, 'model_not_found');
    assertErrorBody(err, 'unknown model');
  });

  test('missing messages -> BadRequestError 400', async () => {
    const err = await apiError(() => client().chat.completions.create({ model: MODEL, max_tokens: 5 }));
    assert.ok(err instanceof BadRequestError, `BadRequestError, got ${err.constructor.name}`);
    assert.equal(err.status, 400);
    assert.equal(err.param, 'messages');
    assertErrorBody(err, 'missing messages');
  });

  test('backend 500 -> InternalServerError passed through', async () => {
    const err = await apiError(() => client().chat.completions.create({ ...CHAT, model: 'always-500' }));
    assert.ok(err instanceof InternalServerError, `InternalServerError, got ${err.constructor.name}`);
    assert.equal(err.status, 500);
    assertErrorBody(err, 'backend 500');
    assert.equal(err.headers.get('x-shade-backend'), 'sim-err', 'the answer came from the backend');

    const serr = await apiError(() =>
      client().chat.completions.create({ ...CHAT, model: 'always-500', stream: true }),
    );
    assert.ok(serr instanceof InternalServerError, `streaming: InternalServerError, got ${serr.constructor.name}`);
    assert.equal(serr.status, 500);
  });

  test('backend 429 -> RateLimitError passed through', async () => {
    const err = await apiError(() => client().chat.completions.create({ ...CHAT, model: 'always-429' }));
    assert.ok(err instanceof RateLimitError, `RateLimitError, got ${err.constructor.name}`);
    assert.equal(err.status, 429);
    assertErrorBody(err, 'backend 429');
    assert.ok(err.headers.get('retry-after'), 'Retry-After passed through');
    assert.equal(err.headers.get('x-shade-backend'), 'sim-limit', 'the answer came from the backend');
  });

  test('dead backend -> APIError 502/503 with an OpenAI error body', async () => {
    // first call: connect refused (502); later calls: backend marked down (503)
    for (let i = 0; i < 2; i++) {
      const err = await apiError(() => client().chat.completions.create({ ...CHAT, model: 'dead' }));
      assert.ok(err instanceof APIError, 'APIError');
      assert.ok([502, 503].includes(err.status), `status 502 or 503, got ${err.status}`);
      assertErrorBody(err, `dead backend #${i + 1}`);
      assert.equal(err.type, 'server_error');
      assert.equal(typeof err.code, 'string', 'error.code set');
    }
  });

  test('client x-request-id comes back unchanged', async () => {
    const id1 = 'sdk-test-default-0001';
    const c = client({ defaultHeaders: { 'x-request-id': id1 } });
    const r1 = await c.chat.completions.create(CHAT).withResponse();
    assert.equal(r1.response.headers.get('x-request-id'), id1, 'defaultHeaders');
    assert.equal(r1.request_id, id1);

    const id2 = 'sdk-test-per-request-0002';
    const r2 = await client().chat.completions.create(CHAT, { headers: { 'X-Request-Id': id2 } }).withResponse();
    assert.equal(r2.response.headers.get('x-request-id'), id2, 'per-request header');

    const id3 = 'sdk-test-stream-0003';
    const r3 = await client()
      .chat.completions.create({ ...CHAT, stream: true }, { headers: { 'x-request-id': id3 } })
      .withResponse();
    assert.equal(r3.response.headers.get('x-request-id'), id3, 'streaming');
    await collectChat(r3.data);

    const id4 = 'sdk-test-error-0004';
    const err = await apiError(() =>
      client().chat.completions.create({ ...CHAT, model: 'no-such-model' }, { headers: { 'x-request-id': id4 } }),
    );
    assert.equal(err.requestID, id4, 'on a gateway error');

    const id5 = 'sdk-test-upstream-error-0005';
    const err5 = await apiError(() =>
      client().chat.completions.create({ ...CHAT, model: 'always-500' }, { headers: { 'x-request-id': id5 } }),
    );
    assert.equal(err5.requestID, id5, 'on a passed-through backend error');
  });
});

// A second gateway whose model has `stream_usage: inject` (mod_usage, a
// response transform): the SDK parses the re-emitted stream as if nothing
// had been injected, while the gateway counts exact usage.
describe('openai SDK through shade with stream_usage: inject', { timeout: 20_000 }, () => {
  let gwUsage;
  before(async () => {
    [gwUsage] = await freePorts(1);
    const cfg = path.join(tmpDir, 'gateway-usage.yaml');
    fs.writeFileSync(
      cfg,
      `server:
  listen: ${HOST}:${gwUsage}
  workers: 1
  shutdown_timeout: 2s
  log_level: warn
models:
  - name: ${MODEL}
    stream_usage: inject
    backends:
      - url: http://${HOST}:${ports.simA}
`,
    );
    const rec = startProc('gateway-usage', ['serve', '-c', cfg]);
    await waitFor(rec, 'GET /healthz = 200', () => healthz(gwUsage));
  });

  test('a stream without include_usage: no usage chunk, same content, exact usage counted', async () => {
    const c = client({ baseURL: `http://${HOST}:${gwUsage}/v1` });
    const reference = await simClient().chat.completions.create(CHAT);
    const { content, chunks } = await collectChat(await c.chat.completions.create({ ...CHAT, stream: true }));
    assert.equal(content, reference.choices[0].message.content);
    assert.ok(chunks.every((ch) => !('usage' in ch)), 'no usage member, as without include_usage');
    assert.ok(chunks.every((ch) => ch.choices.length > 0), 'no usage-only chunk');
    const res = await fetch(`http://${HOST}:${gwUsage}/metrics`);
    const text = await res.text();
    const out = text.split('\n').find((l) => l.startsWith('shade_output_tokens_total{model="demo"'));
    assert.ok(out && Number(out.split(' ').at(-1)) === reference.usage.completion_tokens, `exact: ${out}`);
    assert.ok(!/^shade_usage_estimated_total\{model="demo"[^}]*\} [1-9]/m.test(text), 'not estimated');
  });
});

// A third gateway with keys and limits (auth:): the SDK maps shade's
// refusals to its own error classes, with the fields an application reads.
describe('openai SDK through shade with keys and limits', { timeout: 20_000 }, () => {
  let gwKeys;
  before(async () => {
    [gwKeys] = await freePorts(1);
    const cfg = path.join(tmpDir, 'gateway-keys.yaml');
    fs.writeFileSync(
      cfg,
      `server:
  listen: ${HOST}:${gwKeys}
  workers: 2
  shutdown_timeout: 2s
  log_level: warn
models:
  - name: ${MODEL}
    backends:
      - url: http://${HOST}:${ports.simA}
  - name: other
    backends:
      - url: http://${HOST}:${ports.simB}
auth:
  keys:
    - name: sdk-team
      key_env: SHADE_SDK_KEY
      models: [${MODEL}]
      limits: { rpm: 2 }
`,
    );
    process.env.SHADE_SDK_KEY = 'sk-sdk-team-0123456789';
    const rec = startProc('gateway-keys', ['serve', '-c', cfg]);
    await waitFor(rec, 'GET /healthz = 200', () => healthz(gwKeys));
  });
  const keyed = (apiKey) => client({ baseURL: `http://${HOST}:${gwKeys}/v1`, apiKey });

  test('a wrong key -> AuthenticationError 401 invalid_api_key', async () => {
    const err = await apiError(() => keyed('sk-wrong').chat.completions.create(CHAT));
    assert.ok(err instanceof AuthenticationError, err.constructor.name);
    assert.equal(err.status, 401);
    assert.equal(err.code, 'invalid_api_key');
    assert.ok(!String(err.message).includes('sk-sdk-team'), 'no secret in the message');
  });

  test('a model the key may not use -> PermissionDeniedError 403', async () => {
    const err = await apiError(() => keyed('sk-sdk-team-0123456789').chat.completions.create({ ...CHAT, model: 'other' }));
    assert.ok(err instanceof PermissionDeniedError, err.constructor.name);
    assert.equal(err.status, 403);
    assert.equal(err.code, 'model_not_allowed');
  });

  test('over the rpm limit -> RateLimitError 429 with retry-after and x-ratelimit headers', async () => {
    const c = keyed('sk-sdk-team-0123456789');
    const ok = await c.chat.completions.create(CHAT).withResponse();
    assert.equal(ok.response.headers.get('x-ratelimit-limit-requests'), '2');
    assert.equal(ok.response.headers.get('x-ratelimit-remaining-requests'), '1');
    await c.chat.completions.create(CHAT);
    const err = await apiError(() => c.chat.completions.create(CHAT));
    assert.ok(err instanceof RateLimitError, err.constructor.name);
    assert.equal(err.status, 429);
    assert.equal(err.code, 'rate_limit_exceeded');
    assert.equal(err.type, 'requests');
    const header = (k) => (typeof err.headers.get === 'function' ? err.headers.get(k) : err.headers[k]);
    assert.ok(Number(header('retry-after')) >= 1, `retry-after: ${header('retry-after')}`);
    assert.equal(header('x-ratelimit-remaining-requests'), '0');
  });
});
