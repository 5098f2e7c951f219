/**
 * The command line's habits: `--version`, help for every command, the project's own one-line
 * refusals for bad values (exit 2), directories checked at start, blank environment values
 * unset, unknown `APP_SERVER_*` names warned about, `NO_COLOR`, and the runtime file that lets
 * an IDE find a running server (`app-server list`).
 *
 * What a command prints runs in-process (`runCommand`); the process is the point for the exit
 * codes of the real binary, which run the built CLI as a subprocess (`--version` and a refusal:
 * neither loads the server). A serving process, its runtime file and that file's removal on
 * SIGTERM are checked by the one real server start in banner.test.ts.
 */
import { statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import t from 'tap'
import { pino } from 'pino'
import { COMMANDS } from '../src/cli/commands.js'
import { runListCommand } from '../src/cli/list-command.js'
import { authSummary, writeRuntimeFile, type RuntimeInfo } from '../src/cli/runtime-file.js'
import { renderEnvExample } from '../src/config/env-example.js'
import { envName, FLAGS } from '../src/config/flags.js'
import { ConfigError, loadConfig } from '../src/config/load.js'
import { colorsWanted, prettyDestination } from '../src/log/pretty.js'
import { VERSION } from '../src/version.js'
import { canary } from './helpers/canary.js'
import { runCommand } from './helpers/cli.js'
import { runCli } from './helpers/process.js'
import { tempDir } from './helpers/temp-dir.js'

const tmp = tempDir('cli-habits', t)

/** A subtest's `t`. */
type Subtest = Parameters<Parameters<typeof t.test>[0]>[0]

/** The one line a refusal prints, checked to be ours (never Node's parseArgs wording). */
function assertOneLineRefusal(t: Subtest, r: { code: number | null; stdout: string; stderr: string }, expected: RegExp | string): void {
  t.equal(r.code, 2, 'exit 2')
  t.equal(r.stdout, '')
  t.equal(r.stderr.split('\n').filter(Boolean).length, 1, `one line: ${r.stderr}`)
  t.notMatch(r.stderr, /ambiguous|Option '|ERR_|\n\s+at /, 'in the project’s own words')
  if (typeof expected === 'string') t.equal(r.stderr, expected + '\n')
  else t.match(r.stderr, expected)
}

t.test('--version and -V print the version and exit 0; the banner names it too', async (t) => {
  for (const flag of ['--version', '-V']) {
    const r = await runCommand([flag])
    t.same(r, { code: 0, stdout: `app-server ${VERSION}\n`, stderr: '' }, flag)
  }
  t.match(VERSION, /^\d+\.\d+\.\d+/, 'the version is package.json’s')
})

t.test('help: `app-server help`, `--help`, `help COMMAND` and `COMMAND --help` for every command', async (t) => {
  const main = await runCommand(['help'])
  t.equal(main.code, 0)
  t.same(await runCommand(['--help']), main, '`--help` is `help`')
  for (const c of COMMANDS) {
    t.match(main.stdout, `app-server ${c.name} `, `the usage lists ${c.name}`)
    const viaHelp = await runCommand(['help', c.name])
    const viaFlag = await runCommand([c.name, '--help'])
    t.equal(viaHelp.code, 0, `help ${c.name}`)
    t.equal(viaHelp.stdout, viaFlag.stdout, `help ${c.name} = ${c.name} --help`)
    t.match(viaHelp.stdout, new RegExp(`^Usage: app-server ${c.name}`), `${c.name}: its own usage line`)
  }
  assertOneLineRefusal(t, await runCommand(['help', 'nope']), "unrecognized command 'nope' (see app-server help)")
  assertOneLineRefusal(t, await runCommand(['nope'], { refused: true }), "unrecognized command 'nope' (see app-server help)")
})

t.test('bad flag values get the project’s one-line refusal, however they are spelled', async (t) => {
  const rpcRate = 'invalid value for --rpc-rate: expected an integer from 0 to 100000000'
  const cases: [string[], RegExp | string][] = [
    [['--rpc-rate', '-1'], rpcRate],
    [['--rpc-rate=-1'], rpcRate],
    [['--rpc-rate', 'ten'], rpcRate],
    [['--max-payload', '-5'], /^invalid value for --max-payload: expected an integer from 1 to /],
    [['--listen', '-1'], 'invalid websocket --listen URL `-1`; expected `ws://IP:PORT`'],
    [['--rpc-rate'], "a value is required for '--rpc-rate <N>' but none was supplied"],
    [['--rpc-rate', '--listen', 'ws://127.0.0.1:0'], "a value is required for '--rpc-rate <N>' but none was supplied"],
    [['--no-token-check=yes'], "unexpected value 'yes' for '--no-token-check' found; it takes no value"],
    [['--no-such-flag'], "unexpected argument '--no-such-flag' found (see --help)"],
  ]
  for (const [argv, expected] of cases) {
    t.test(argv.join(' '), async (t) => assertOneLineRefusal(t, await runCommand(argv, { refused: true }), expected))
  }
})

t.test('the real binary: exit 0 for --version, exit 2 for a bad value', async (t) => {
  const version = await runCli(['--version'])
  t.same({ code: version.code, stdout: version.stdout }, { code: 0, stdout: `app-server ${VERSION}\n` })
  assertOneLineRefusal(t, await runCli(['--rpc-rate', '-1']), 'invalid value for --rpc-rate: expected an integer from 0 to 100000000')
})

t.test('an unusable --home and a --url-file without its directory are refused before serving', async (t) => {
  const file = join(tmp, 'a-file')
  writeFileSync(file, 'not a directory')
  assertOneLineRefusal(t, await runCommand(['--listen', 'ws://127.0.0.1:0'], { env: { APP_SERVER_HOME: file }, refused: true }), `--home ${file} is not a usable directory: a file is in the way`)
  const missing = join(tmp, 'no-such-dir')
  assertOneLineRefusal(t, await runCommand(['--listen', 'ws://127.0.0.1:0', '--url-file', join(missing, 'url')], { refused: true }), `--url-file directory ${missing} does not exist`)
})

t.test('in-process: --home under a file is refused too, and a missing home is created 0700', async (t) => {
  const file = join(tmp, 'home-parent-file')
  writeFileSync(file, '')
  assertOneLineRefusal(t, await runCommand(['status', '--home', join(file, 'home')]), /^--home .* is not a usable directory: /)
  const fresh = join(tmp, 'fresh', 'home')
  // The home is made before the url file's directory is checked, so a start refused for the
  // latter shows it (without loading the server, nor the account service as `status` would).
  const missing = join(tmp, 'no-such-url-dir')
  assertOneLineRefusal(t, await runCommand(['--listen', 'ws://127.0.0.1:0', '--home', fresh, '--url-file', join(missing, 'url')], { refused: true }), `--url-file directory ${missing} does not exist`)
  t.equal(statSync(fresh).mode & 0o777, 0o700, 'the missing home was created 0700')
})

t.test('a blank environment or .env value is unset: every setting, and APP_SERVER_WS_AUTH= in particular', async (t) => {
  const defaults = loadConfig([], { env: {}, dotenvPath: null })
  for (const f of FLAGS) {
    const c = loadConfig([], { env: { [envName(f.name)]: '' }, dotenvPath: null })
    t.equal(c.sources[f.key], 'default', `${envName(f.name)}= is unset`)
  }
  t.same(loadConfig([], { env: { APP_SERVER_WS_AUTH: '' }, dotenvPath: null }).auth, defaults.auth, 'APP_SERVER_WS_AUTH= is the generated query token')
  t.same(loadConfig([], { env: { APP_SERVER_WS_AUTH: '  ' }, dotenvPath: null }).auth, defaults.auth, 'whitespace only is blank too')

  // .env.example with its blank settings (`# APP_SERVER_WS_AUTH=`) uncommented: they load as unset.
  const dotenv = join(tmp, 'example.env')
  const example = renderEnvExample().replace(/^# ([A-Z_]+=)$/gm, '$1')
  t.match(example, /^APP_SERVER_WS_AUTH=$/m)
  writeFileSync(dotenv, example)
  const fromExample = loadConfig([], { env: {}, dotenvPath: dotenv })
  t.same(fromExample.auth, defaults.auth)
  t.same(fromExample.limits, defaults.limits)
  t.same(fromExample.unknownSettings, [], 'every name in .env.example is a setting')
})

t.test('unknown APP_SERVER_* names are warned about by name, from the environment and from .env', async (t) => {
  const dotenv = join(tmp, 'typo.env')
  writeFileSync(dotenv, 'APP_SERVER_LISTN=ws://127.0.0.1:1\nAPP_SERVER_LOG_LEVEL=debug\nOTHER_TOOL_SETTING=1\n')
  const c = loadConfig([], { env: { APP_SERVER_RPC_RTAE: '5', APP_SERVER_HOME: tmp, PATH: '/bin' }, dotenvPath: dotenv })
  t.same(c.unknownSettings, [
    { name: 'APP_SERVER_RPC_RTAE', source: 'env' },
    { name: 'APP_SERVER_LISTN', source: '.env' },
  ])
  // `list` warns like every command, and loads nothing more.
  const r = await runCommand(['list'], { env: { APP_SERVER_RPC_RTAE: '5' } })
  t.match(r.stderr, /^warning: APP_SERVER_RPC_RTAE is not an app-server setting \(environment\); ignored$/m)
  const clean = await runCommand(['list'])
  t.notMatch(clean.stderr, /warning:/, 'no warning without one')
})

t.test('NO_COLOR: terminal logs without colours', async (t) => {
  t.equal(colorsWanted({}), true)
  t.equal(colorsWanted({ NO_COLOR: '' }), true, 'an empty NO_COLOR is unset')
  t.equal(colorsWanted({ NO_COLOR: '1' }), false)
  const render = (colors: boolean): string => {
    let out = ''
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        out += chunk.toString()
        done()
      },
    })
    pino(prettyDestination({ colors, destination: sink })).info('hello')
    return out
  }
  t.match(render(true), /\x1b\[/, 'colours by default (so the check below can see them)')
  const plain = render(false)
  t.match(plain, /INFO.*hello/)
  t.notMatch(plain, /\x1b\[/, 'none with NO_COLOR')
})

t.test('a JWT secret file that is not UTF-8 text is refused at start', async (t) => {
  const path = join(tmp, 'secret.bin')
  writeFileSync(path, Buffer.concat([Buffer.alloc(40, 0x61), Buffer.from([0xff, 0xfe, 0x80])]))
  t.throws(() => loadConfig(['--ws-auth', 'signed-bearer-token', '--ws-shared-secret-file', path], { env: {}, dotenvPath: null }), new ConfigError(`websocket auth secret ${path} is not valid UTF-8 text (it is read as trimmed text)`))
})

t.test('runtime file: the credential is named, never given', async (t) => {
  const tokenFile = join(tmp, 'token')
  const token = canary('cap-token')
  writeFileSync(tokenFile, token)
  const cap = loadConfig(['--ws-auth', 'capability-token', '--ws-token-file', tokenFile], { env: {}, dotenvPath: null })
  t.same(authSummary(cap.auth, null), { auth: 'capability-token', credential: { how: 'send the token in this file as a bearer token', path: tokenFile } })
  const off = loadConfig(['--no-token-check'], { env: {}, dotenvPath: null })
  t.equal(authSummary(off.auth, null).auth, 'none')
  const query = loadConfig([], { env: {}, dotenvPath: null })
  t.match(authSummary(query.auth, null).credential.how, /banner only/)
})

t.test('list: one line per running server on a terminal, JSON when piped or asked', async (t) => {
  const home = join(tmp, 'list-home')
  const urlFile = join(tmp, 'url')
  // This process stands for the running server (its pid is alive); the real server's own file
  // is checked by banner.test.ts.
  const info: RuntimeInfo = { url: 'ws://127.0.0.1:4500/', pid: process.pid, version: VERSION, auth: 'query-token', credential: { how: 'the connection URL with its token is in the --url-file', path: urlFile } }
  writeRuntimeFile(home, info)
  const listed = await runCommand(['list', '--home', home])
  t.equal(listed.code, 0)
  t.same(JSON.parse(listed.stdout), [info], 'list prints JSON when piped')
  t.same(JSON.parse((await runCommand(['list', '--json', '--home', home], { tty: true })).stdout), [info], 'and with --json on a terminal')
  let human = ''
  const terminal = Object.assign(
    new Writable({
      write(chunk: Buffer, _enc, done) {
        human += chunk.toString()
        done()
      },
    }),
    { isTTY: true },
  ) as unknown as NodeJS.WriteStream
  t.equal(runListCommand(home, { json: false, stdout: terminal }), 0)
  t.equal(human, `ws://127.0.0.1:4500/  pid ${process.pid}  app-server ${VERSION}  auth query-token (the connection URL with its token is in the --url-file: ${urlFile})\n`, 'one line per server on a terminal')
})
