import { chmod, writeFile } from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import { connectionUrl, formatBanner } from '../banner.js'
import { helpText } from '../config/flags.js'
import { ConfigError, loadConfig } from '../config/load.js'
import { errorCode } from '../util/error-code.js'

export interface CliIo {
  readonly env: Readonly<Record<string, string | undefined>>
  readonly stdout: NodeJS.WriteStream
  readonly stderr: NodeJS.WriteStream
  readonly stdin?: NodeJS.ReadableStream
}

const ACCOUNT_COMMANDS = ['login', 'logout', 'status'] as const

/**
 * `app-server [flags]`: validate the config, start the listener, print the banner, and stop
 * gracefully on SIGINT/SIGTERM. Returns the exit code for refusals; a running server exits
 * through close-with-grace.
 */
export async function runCli(argv: readonly string[], io: CliIo): Promise<number> {
  if (argv.includes('-h') || argv.includes('--help')) {
    io.stdout.write(helpText())
    return 0
  }
  const command = (ACCOUNT_COMMANDS as readonly string[]).includes(argv[0] ?? '') ? (argv[0] as (typeof ACCOUNT_COMMANDS)[number]) : null
  const remoteControl = argv[0] === 'remote-control'
  let rest = command === null && !remoteControl ? argv : argv.slice(1)
  const json = remoteControl && rest.includes('--json')
  if (json) rest = rest.filter((a) => a !== '--json')
  const withApiKey = command === 'login' && rest.includes('--with-api-key')
  if (withApiKey) rest = rest.filter((a) => a !== '--with-api-key')
  let config
  try {
    config = loadConfig(rest, { env: io.env })
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
    // environment or .env asked for a level.
    const level = config.sources.logLevel === 'default' ? 'warn' : config.logLevel
    const logger = createLogger(level, pino.destination({ fd: 2, sync: true }))
    return runAccountCommand(command, { withApiKey }, config, logger, { ...io, stdin: io.stdin ?? process.stdin })
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
      ? (await import('../log/pretty.js')).prettyDestination()
      : undefined
  const logger = createLogger(config.logLevel, destination)
  const app = await buildApp(config, { logger, ...(io.env.TERM ? { terminal: io.env.TERM } : {}) })
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
  if (config.urlFile !== null) {
    // Created 0600 and chmod-ed in case it existed with looser bits.
    await writeFile(config.urlFile, connectionUrl(facts) + '\n', { mode: 0o600 })
    await chmod(config.urlFile, 0o600)
  }
  io.stderr.write(formatBanner(facts))
  if (remoteControl) {
    const { announceRemoteControl } = await import('./remote-control-command.js')
    void announceRemoteControl(app.remoteControl, { json, stdout: io.stdout, log: logger, waitMs: config.remoteControlWaitMs })
  }

  // The last resort (exit 1) only once the drain's own deadline and what follows it are past.
  closeWithGrace({ delay: config.shutdownTimeoutMs + AFTER_DRAIN_MS, logger: { error: (m: unknown) => logger.error(m) } }, async ({ signal, err }) => {
    if (err) logger.error({ error: withheldError(err) }, 'shutting down after an error')
    else logger.info({ signal }, 'shutting down')
    await drainAndClose(app)
  })
  return 0
}
