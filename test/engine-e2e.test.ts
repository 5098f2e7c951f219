/**
 * The real codex engine behind the whole gateway, end to end over real sockets: the gateway
 * spawns `codex app-server` from the installed `@openai/codex`, pointed by `--engine-config`
 * at a fake Responses API on loopback, with a throwaway engine home. Clients connect with
 * JWTs: a full one runs a streamed turn and approves a command; one without `thread:write`
 * is refused before anything reaches the engine; one without `exec` never sees an approval
 * (the gateway declines it). The engine's process owns no listening TCP socket.
 *
 * Skips (saying why) only when the engine binary is not installed; under CI it fails instead,
 * so CI can never skip it silently.
 */
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { resolveEngineBinary } from '../src/engine/binary.js'
import { connect, httpGet, type RpcClient } from './helpers/client.js'
import { FakeModel } from './helpers/fake-model.js'
import { nowSeconds, signJwt } from './helpers/jwt.js'
import { socketInodesOf } from './helpers/proc-sockets.js'
import { startServer } from './helpers/server.js'
import { tempDir } from './helpers/temp-dir.js'

type Json = Record<string, any>

const SECRET = 'engine-e2e-test-shared-secret-0123456789abcdef'
// The engine and the shells it runs inherit HOME: a throwaway one keeps them out of the
// developer's home (codex writes under ~/.codex/tmp) and away from a login profile that may be slow.
process.env.HOME = tempDir('engine-e2e-user-home')

const installed = resolveEngineBinary()
const absent = installed.ok ? null : `the codex engine is not installed here (${installed.reason})`
if (absent !== null && process.env.CI) t.fail(`real-engine tests cannot run under CI: ${absent}`)

async function client(wsBase: string, scope?: string): Promise<RpcClient> {
  const jwt = await signJwt(SECRET, { exp: nowSeconds() + 600, ...(scope === undefined ? {} : { scope }) })
  return connect(wsBase, { Authorization: `Bearer ${jwt}` })
}

/** Inodes of the TCP sockets listening on this host (state 0A in /proc/net/tcp*). */
function listeningTcpInodes(): Set<string> {
  const inodes = new Set<string>()
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = ''
    try {
      text = readFileSync(file, 'utf8')
    } catch {
      continue
    }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/)
      if (cols[3] === '0A' && cols[9] !== undefined) inodes.add(cols[9])
    }
  }
  return inodes
}

/** Runs a turn on `thread` and resolves with the notifications of that turn, once it completed. */
async function turn(c: RpcClient, threadId: string, text: string): Promise<Json[]> {
  const before = c.frames.length
  const started = await c.request('turn/start', { threadId, input: [{ type: 'text', text, text_elements: [] }] })
  if (!('result' in started)) throw new Error(`turn/start failed: ${JSON.stringify(started)}`)
  const completedAfter = (): boolean => c.frames.slice(before).some((f) => (JSON.parse(f) as Json).method === 'turn/completed')
  await c.waitForFrame(() => completedAfter())
  return c.frames.slice(before).map((f) => JSON.parse(f) as Json).filter((m) => typeof m.method === 'string')
}

/** What the model was told the `exec_command` call for `cmd` (the last one with that word) returned. */
function toolOutput(model: FakeModel, word: string): string {
  for (const call of [...model.responseCalls].reverse()) {
    const input = ((call.body as Json).input ?? []) as Json[]
    const callIds = input.filter((i) => i.type === 'function_call' && String(i.arguments).includes(word)).map((i) => i.call_id)
    const output = input.find((i) => i.type === 'function_call_output' && callIds.includes(i.call_id))
    if (output !== undefined) return String(output.output)
  }
  return ''
}

t.test('a codex client works through the gateway against the real engine', { skip: absent ?? false }, async (t) => {
  const model = await FakeModel.start({ defaultText: 'Hello through the gateway, in pieces.', defaultDeltas: 6 })
  t.teardown(() => model.close())
  const dir = tempDir('engine-e2e-auth', t)
  const secretFile = join(dir, 'secret')
  writeFileSync(secretFile, SECRET)
  const overrides = [...model.engineConfigOverrides(), 'approval_policy="on-request"']
  const server = await startServer({
    argv: [
      '--ws-auth', 'signed-bearer-token', '--ws-shared-secret-file', secretFile,
      '--engine', 'on', '--engine-home', tempDir('engine-e2e-codex-home', t),
      ...overrides.flatMap((o) => ['--engine-config', o]),
    ],
  })
  t.teardown(() => server.drainAndClose())
  t.equal((await server.app.engine.settled()).state, 'running', 'the engine is ready')
  t.equal((await httpGet(`${server.httpBase}/readyz`)).status, 200)
  t.same(JSON.parse((await httpGet(`${server.httpBase}/healthz`)).body).engine, { state: 'running', version: '0.169.0' })

  const pid = server.app.engine.pid
  t.type(pid, 'number')
  const listening = listeningTcpInodes()
  t.same(socketInodesOf(pid!).filter((i) => listening.has(i)), [], 'the engine owns no listening TCP socket')

  // A full client: initialize, thread, a streamed turn.
  const full = await client(server.wsBase)
  t.teardown(() => full.close())
  const init = await full.request('initialize', { clientInfo: { name: 'e2e-ide', title: null, version: '1.0.0' } })
  t.match(init.result, { userAgent: /\/0\.169\.0 .*\(e2e-ide; 1\.0\.0\)$/ }, "the engine's own initialize result")
  full.notify('initialized')
  const thread = await full.request('thread/start', { cwd: tempDir('engine-e2e-work', t) })
  const threadId = (thread.result as Json).thread.id as string
  t.type(threadId, 'string')
  const notes = await turn(full, threadId, 'say hello')
  const deltas = notes.filter((n) => n.method === 'item/agentMessage/delta')
  t.equal(deltas.map((d) => d.params.delta).join(''), 'Hello through the gateway, in pieces.', 'the streamed deltas')
  t.match(notes.find((n) => n.method === 'turn/completed')?.params, { turn: { status: 'completed' } })
  const account = await full.request('account/read', {})
  t.same(account.result, { account: null, requiresOpenaiAuth: false }, "the mock provider needs no OpenAI auth, as the engine says")

  // No thread:write: refused by the gateway; the engine never hears of it.
  const calls = model.responseCalls.length
  const reader = await client(server.wsBase, 'session account:read thread:read')
  t.teardown(() => reader.close())
  await reader.initialize('e2e-reader')
  t.same((await reader.request('thread/start', {})).error, { code: -32600, message: 'method thread/start requires scope thread:write' })
  t.same((await reader.request('turn/start', { threadId, input: [] })).error, { code: -32600, message: 'method turn/start requires scope thread:write' })
  t.equal(model.responseCalls.length, calls, 'no turn ran')
  t.ok(Array.isArray(((await reader.request('thread/loaded/list', {})).result as Json).data), 'what it may do, it can')

  // A command that needs approval reaches the exec client under a gateway id; accepting runs it.
  model.script({ kind: 'function_call', name: 'exec_command', arguments: JSON.stringify({ cmd: 'echo approved-run', sandbox_permissions: 'require_escalated' }) })
  const approvalSeen = full.waitForFrame((m) => m.method === 'item/commandExecution/requestApproval').then((request) => {
    full.sendRaw(JSON.stringify({ id: request.id, result: { decision: 'accept' } }))
    return request
  })
  const approvedTurn = await turn(full, threadId, 'run it')
  const request = await approvalSeen
  t.type(request.id, 'number', 'an id from the gateway allocator')
  t.match(request.params, { threadId, command: /echo approved-run/ })
  // Under load the shell may outlive the tool's 10 s yield; what the model got back says it ran.
  t.match(toolOutput(model, 'approved'), /approved-run|Process running/, 'the approval reached the engine: the command ran')
  t.ok(approvedTurn.some((n) => n.method === 'serverRequest/resolved' && n.params.requestId === request.id), 'resolved names the id the client saw')

  // Without exec the gateway declines: the client never sees the request, the command never runs.
  const chatter = await client(server.wsBase, 'session account:read thread:read thread:write')
  t.teardown(() => chatter.close())
  await chatter.initialize('e2e-chatter')
  chatter.notify('initialized')
  const own = await chatter.request('thread/start', { cwd: tempDir('engine-e2e-work2', t) })
  const ownId = (own.result as Json).thread.id as string
  model.script({ kind: 'function_call', name: 'exec_command', arguments: JSON.stringify({ cmd: 'echo declined-run', sandbox_permissions: 'require_escalated' }) })
  const declinedTurn = await turn(chatter, ownId, 'try to run it')
  t.same(chatter.serverRequests, [], 'no approval request reached a client without exec')
  t.ok(declinedTurn.some((n) => n.method === 'turn/completed'), 'the turn carried on')
  const declinedOutput = toolOutput(model, 'declined')
  t.match(declinedOutput, /rejected by user/, 'declined by the gateway on its behalf: the command did not run')
})
