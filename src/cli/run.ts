import { rmSync } from 'node:fs'
import { chmod, writeFile } from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import { connectionUrl, formatBanner } from '../banner.js'
import { ConfigError, loadConfig } from '../config/load.js'
import { checkUrlFileDirectory, ensureHomeDirectory } from '../config/paths.js'
import type { Config } from '../config/types.js'
import { errorCode } from '../util/error-code.js'
import type { Clock } from '../clock.js'
import { VERSION } from '../version.js'
import { commandHelp, findCommand, mainHelp } from './commands.js'

export interface CliIo {
  readonly env: Readonly<Record<string, string | undefined>>
  readonly stdout: NodeJS.WriteStream
  readonly stderr: NodeJS.WriteStream
  readonly stdin?: NodeJS.ReadableStream
  /** Runs the login commands' waits (tests drive it); the system clock otherwise. */
  readonly clock?: Clock
}

const ACCOUNT_COMMANDS = ['login', 'logout', 'status'] as const

/**
 * `app-server [COMMAND] [flags]`: answer `--version` and help without loading anything else;
 * validate the config (refusals are one line, exit 2), warn about unknown `APP_SERVER_*`
 * names, then run the command, or start the listener, print the banner, write the runtime
 * file, and stop gracefully on SIGINT/SIGTERM. Returns the exit code for refusals and finished
 * commands; a running server exits through close-with-grace.
 */
export async function runCli(argv: readonly string[], io: CliIo): Promise<number> {
  if (argv.includes('-V') || argv.includes('--version')) {
    io.stdout.write(`app-server ${VERSION}\n`)
    return 0
  }
  const named = argv[0] !== undefined && !argv[0].startsWith('-') ? argv[0] : null
  const spec = named === null ? null : findCommand(named)
  if (named !== null && spec === undefined) {
    io.stderr.write(`unrecognized command '${named}' (see app-server help)\n`)
    return 2
  }
  // `help -h` is help's own help, as `COMMAND -h` is for every other command.
  if (named === 'help') return printHelp(argv[1] === undefined ? null : argv[1].startsWith('-') ? 'help' : argv[1], io)
  if (argv.includes('-h') || argv.includes('--help')) return printHelp(named, io)

  const command = (ACCOUNT_COMMANDS as readonly string[]).includes(named ?? '') ? (named as (typeof ACCOUNT_COMMANDS)[number]) : null
  const remoteControl = named === 'remote-control'
  let rest = named === null ? argv : argv.slice(1)
  // Output is for a person unless asked for JSON, where a command has a JSON form.
  const json = (remoteControl || named === 'list' || command === 'status') && rest.includes('--json')
  if (json) rest = rest.filter((a) => a !== '--json')
  const withApiKey = command === 'login' && rest.includes('--with-api-key')
  if (withApiKey) rest = rest.filter((a) => a !== '--with-api-key')
  const deviceAuth = command === 'login' && rest.includes('--device-auth')
  if (deviceAuth) rest = rest.filter((a) => a !== '--device-auth')
  if (withApiKey && deviceAuth) {
    io.stderr.write('error: --with-api-key and --device-auth cannot be used together\n')
    return 2
  }
  let config: Config
  try {
    config = loadConfig(rest, { env: io.env })
    for (const u of config.unknownSettings) io.stderr.write(`warning: ${u.name} is not an app-server setting (${u.source === 'env' ? 'environment' : '.env'}); ignored\n`)
    if (named === 'list') {
      const { runListCommand } = await import('./list-command.js')
      return runListCommand(config.home, { json, stdout: io.stdout })
    }
    ensureHomeDirectory(config.home)
    if (command === null) checkUrlFileDirectory(config.urlFile)
  } catch (err) {
    if (err instanceof ConfigError) {
      io.stderr.write(err.message + '\n')
      return err.exitCode
    }
    throw err
  }

  if (command !== null) {
    const [{ runAccountCommand }, { createLogger }, { pino }] = await Promise.all([import('./account-commands.js'), import('../log/logger.js'), import('pino')])
    // Commands print for a person; their logs go to stderr at warn unless a flag, the
    // environment or .env asked for a level: readable lines on a terminal, JSON when piped.
    const level = config.sources.logLevel === 'default' ? 'warn' : config.logLevel
    const destination = io.stderr.isTTY ? await import('../log/pretty.js').then((p) => p.prettyDestination({ colors: p.colorsWanted(io.env), destination: 2 })) : pino.destination({ fd: 2, sync: true })
    const logger = createLogger(level, destination)
    return runAccountCommand(command, { withApiKey, deviceAuth, json }, config, logger, { ...io, stdin: io.stdin ?? process.stdin })
  }

  // Loaded only now, so that `--help` and refusals answer without loading the server.
  const [{ AFTER_DRAIN_MS, buildApp, drainAndClose }, { createLogger, withheldError }, { default: closeWithGrace }] = await Promise.all([
    import('../app.js'),
    import('../log/logger.js'),
    import('close-with-grace'),
  ])
  // `remote-control` keeps stdout for its one announcement line: its logs go to stderr.
  const destination = remoteControl
    ? (await import('pino')).pino.destination({ fd: 2, sync: false })
    : io.stdout.isTTY
      ? await import('../log/pretty.js').then((p) => p.prettyDestination({ colors: p.colorsWanted(io.env) }))
      : undefined
  const logger = createLogger(config.logLevel, destination)
  const app = await buildApp(config, { logger, ...(io.env.TERM ? { terminal: io.env.TERM } : {}) })
  const rcCommand = remoteControl ? await import('./remote-control-command.js') : null
  if (rcCommand !== null && rcCommand.accountKindOf(app.accounts) === 'apiKey') {
    await app.close()
    return rcCommand.refuseApiKey(app.remoteControl, { json, stdout: io.stdout, stderr: io.stderr })
  }
  try {
    await app.listen({ host: config.listen.host, port: config.listen.port })
  } catch (err) {
    const code = errorCode(err) ?? 'error'
    io.stderr.write(`failed to listen on ${config.listen.host}:${config.listen.port}: ${code}\n`)
    return 1
  }

  const port = (app.server.address() as AddressInfo).port
  const facts = {
    host: config.listen.host,
    port,
    loopback: config.listen.loopback,
    queryToken: app.wsAuth.queryToken,
    enforced: app.wsAuth.enforced,
    engineLine: app.engine.bannerLine(),
  }
  const { authSummary, readRuntimeFiles, writeRuntimeFile } = await import('./runtime-file.js')
  const written: string[] = []
  try {
    if (config.urlFile !== null) {
      // Created 0600 and chmod-ed in case it existed with looser bits.
      await writeFile(config.urlFile, connectionUrl(facts) + '\n', { mode: 0o600 })
      await chmod(config.urlFile, 0o600)
      written.push(config.urlFile)
    }
    readRuntimeFiles(config.home, { prune: true })
    const runtime = { url: connectionUrl({ ...facts, queryToken: null }), pid: process.pid, version: VERSION, ...authSummary(config.auth, config.urlFile) }
    written.push(writeRuntimeFile(config.home, runtime))
  } catch (err) {
    // The checks before listening make this rare (a full disk, a file in the way).
    io.stderr.write(`failed to write the ${written.length === 0 && config.urlFile !== null ? 'url file' : 'runtime file'}: ${errorCode(err) ?? 'error'}\n`)
    removeAll(written)
    await drainAndClose(app)
    return 2
  }
  io.stderr.write(formatBanner(facts))
  if (rcCommand !== null) {
    void rcCommand.announceRemoteControl(app.remoteControl, { json, stdout: io.stdout, log: logger, waitMs: config.remoteControlWaitMs, accountKind: () => rcCommand.accountKindOf(app.accounts) })
  }

  // The last resort (exit 1) only once the drain's own deadline and what follows it are past.
  closeWithGrace({ delay: config.shutdownTimeoutMs + AFTER_DRAIN_MS, logger: { error: (m: unknown) => logger.error(m) } }, async ({ signal, err }) => {
    if (err) logger.error({ error: withheldError(err) }, 'shutting down after an error')
    else logger.info({ signal }, 'shutting down')
    try {
      await drainAndClose(app)
    } finally {
      // Gone once the server is: neither file may point at a dead server or a dead token.
      removeAll(written)
    }
  })
  return 0
}

function printHelp(name: string | null, io: CliIo): number {
  if (name === null) {
    io.stdout.write(mainHelp())
    return 0
  }
  const spec = findCommand(name)
  if (spec === undefined) {
    io.stderr.write(`unrecognized command '${name}' (see app-server help)\n`)
    return 2
  }
  io.stdout.write(commandHelp(spec))
  return 0
}

function removeAll(paths: readonly string[]): void {
  for (const path of paths) rmSync(path, { force: true })
}
