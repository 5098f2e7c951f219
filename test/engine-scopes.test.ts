/**
 * Every method of the codex protocol has a scope (connection authority is not execution
 * authority, for every method): the project's copy of codex 0.169.0's method list,
 * and the list the installed engine itself generates, are both fully classified.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { SCOPES } from '../src/auth/principal.js'
import { accountMethods } from '../src/account/methods.js'
import { declineResult } from '../src/engine/approval-decline.js'
import { APPROVAL_REQUEST_METHODS, classifiedMethods, GATEWAY_OWNED_METHODS, scopeOf } from '../src/engine/scopes.js'
import { remoteControlMethods } from '../src/remote-control/methods.js'
import { runProcess } from './helpers/process.js'
import { initializeMethods } from '../src/rpc/methods/initialize.js'

const FIXTURE = new URL('../../test/fixtures/codex-0.169.0/client-methods.txt', import.meta.url)

function methodList(text: string): string[] {
  return text.split('\n').map((l) => l.trim()).filter((l) => l !== '')
}

t.test("every method in the project's codex 0.169.0 list has a scope", async (t) => {
  const methods = methodList(readFileSync(FIXTURE, 'utf8'))
  t.equal(methods.length, 109, 'codex 0.169.0 has 109 client methods')
  const unclassified = methods.filter((m) => scopeOf(m) === 'ALL')
  t.same(unclassified, [], 'no method falls through to ALL')
  for (const m of methods) {
    const scope = scopeOf(m)
    if (scope !== 'ALL') t.ok((SCOPES as readonly string[]).includes(scope), `${m} needs a known scope (${scope})`)
  }
})

t.test('the table holds no method that is neither codex 0.169.0 nor gateway-owned', async (t) => {
  const known = new Set([...methodList(readFileSync(FIXTURE, 'utf8')), ...GATEWAY_OWNED_METHODS])
  t.same([...classifiedMethods()].filter((m) => !known.has(m)), [])
})

t.test('a method the table does not know needs every scope', async (t) => {
  for (const m of ['thread/teleport', 'process/spawn', 'constructor', '__proto__', 'toString', '', 'THREAD/LIST']) {
    t.equal(scopeOf(m), 'ALL', JSON.stringify(m))
  }
})

t.test('the classification follows the policy for representative methods', async (t) => {
  const expected: Record<string, string> = {
    initialize: 'session',
    'thread/list': 'thread:read',
    'thread/read': 'thread:read',
    'model/list': 'thread:read',
    'thread/start': 'thread:write',
    'turn/start': 'thread:write',
    'review/start': 'thread:write',
    'fs/readFile': 'fs:read',
    fuzzyFileSearch: 'fs:read',
    'fs/writeFile': 'fs:write',
    'command/exec': 'exec',
    'command/exec/resize': 'exec',
    'thread/shellCommand': 'exec',
    'config/read': 'config:read',
    'config/value/write': 'config:write',
    'plugin/install': 'config:write',
    'marketplace/add': 'config:write',
    'modelProvider/config/write': 'config:write',
    'experimentalFeature/enablement/set': 'config:write',
    'account/usage/read': 'account:read',
    'account/gatewayOAuth/login': 'account:write',
  }
  for (const [method, scope] of Object.entries(expected)) t.equal(scopeOf(method), scope, method)
})

t.test("gateway-owned methods: the table agrees with the scope each handler declares", async (t) => {
  const defs = [...initializeMethods(), ...accountMethods(), ...remoteControlMethods()]
  t.same(new Set(defs.map((d) => d.name)), GATEWAY_OWNED_METHODS, 'the owned list is exactly the gateway handlers')
  for (const def of defs) t.equal(scopeOf(def.name), def.scope, def.name)
})

t.test('every approval request has a declining answer', async (t) => {
  t.equal(APPROVAL_REQUEST_METHODS.size, 5)
  for (const m of APPROVAL_REQUEST_METHODS) t.not(declineResult(m), undefined, m)
  t.equal(declineResult('item/tool/requestUserInput'), undefined, 'no decline for a non-approval request')
})

/** The installed engine's launcher script (it picks the platform binary), or null. */
function codexLauncher(): string | null {
  try {
    return createRequire(import.meta.url).resolve('@openai/codex/bin/codex.js')
  } catch {
    return null
  }
}

/** Why the engine-generated list cannot be checked here, or false when it can. */
async function engineSkipReason(launcher: string | null, env: NodeJS.ProcessEnv): Promise<string | false> {
  if (launcher === null) return '@openai/codex is not installed: the engine-generated method list cannot be checked'
  const { code } = await runProcess(process.execPath, [launcher, '--version'], { env, timeoutMs: null, record: [] })
  return code === 0 ? false : 'the codex binary does not run on this platform: the engine-generated method list cannot be checked'
}

const scratch = mkdtempSync(join(tmpdir(), 'app-server-engine-schema-'))
t.teardown(() => rmSync(scratch, { recursive: true, force: true }))
// A throwaway home: the check reads nothing of the developer's codex set-up.
const engineEnv = { PATH: process.env.PATH ?? '', HOME: scratch, CODEX_HOME: scratch }
const launcher = codexLauncher()

// The skip decision is made inside the test: a test registered after a top-level await can be
// left out of the run without a word. Under CI the engine must be there.
t.test('the installed engine generates no method the table does not classify', async (t) => {
  const engineSkip = await engineSkipReason(launcher, engineEnv)
  if (engineSkip !== false) {
    if (process.env.CI) t.fail(`under CI: ${engineSkip}`)
    else t.test('the engine-generated list', { skip: engineSkip }, () => {})
    return
  }
  const out = join(scratch, 'schema')
  const { code } = await runProcess(process.execPath, [launcher!, 'app-server', 'generate-json-schema', '--out', out], { env: engineEnv, timeoutMs: null, record: [] })
  t.equal(code, 0, 'generate-json-schema succeeded')
  const schema = JSON.parse(readFileSync(join(out, 'ClientRequest.json'), 'utf8')) as { oneOf: { properties?: { method?: { enum?: string[] } } }[] }
  const methods = schema.oneOf.flatMap((v) => v.properties?.method?.enum ?? [])
  t.ok(methods.length >= 109, `the engine lists its client methods (${methods.length})`)
  t.same(methods.filter((m) => scopeOf(m) === 'ALL'), [], 'every engine method is classified')
  t.same(methods, methodList(readFileSync(FIXTURE, 'utf8')), "the project's copy is the installed engine's list")
})
