/**
 * The commands of `app-server` and their help: `app-server help`, `app-server --help`,
 * `app-server help COMMAND` and `app-server COMMAND --help` all print from this table, so no
 * command exists without its help. The serving commands list every flag (the flag table's own
 * help); `list` names the two it reads.
 */
import { optionsHelp } from '../config/flags.js'
import { VERSION } from '../version.js'

export interface CommandSpec {
  readonly name: string
  /** What follows `app-server NAME` on its usage line. */
  readonly args: string
  readonly summary: string
  /** More lines for `app-server NAME --help`. */
  readonly details: readonly string[]
  /** The options it reads, when not every `app-server` option. */
  readonly options?: string
}

export const COMMANDS: readonly CommandSpec[] = [
  {
    name: 'login',
    args: '[--with-api-key | --device-auth] [OPTIONS]',
    summary: 'sign in (browser flow, a one-time code, or an API key read from stdin)',
    details: [
      'Without a flag: the browser flow (a callback on 127.0.0.1:1455; waits up to 10 minutes).',
      '--device-auth: prints a URL and a one-time code to enter in a browser anywhere (waits up to 15 minutes).',
      '--with-api-key: reads the key from stdin (pipe it in; a terminal is refused).',
      'Credentials are stored as --credentials-store says, under --home.',
    ],
  },
  { name: 'logout', args: '[OPTIONS]', summary: 'sign out and clear stored credentials', details: [] },
  { name: 'status', args: '[OPTIONS]', summary: 'show the account and its rate limits', details: ['Exits 1 when not logged in.'] },
  {
    name: 'remote-control',
    args: '[--json] [OPTIONS]',
    summary: 'serve with remote control enabled',
    details: ['Prints one line once connected (or once --remote-control-wait-seconds have passed); --json prints it as JSON.'],
  },
  {
    name: 'list',
    args: '[--json]',
    summary: 'list the servers running with this home',
    details: ['One line each on a terminal; JSON (an array) when piped or with --json. Read from HOME/run/server-<pid>.json.'],
    options: '--home DIR (env: APP_SERVER_HOME), --json',
  },
  { name: 'help', args: '[COMMAND]', summary: 'print this help, or the help of a command', details: [] },
]

export function findCommand(name: string): CommandSpec | undefined {
  return COMMANDS.find((c) => c.name === name)
}

const USAGE_WIDTH = 46

export function mainHelp(): string {
  const lines = [
    `app-server ${VERSION}`,
    '',
    `Usage: ${'app-server [OPTIONS]'.padEnd(USAGE_WIDTH)} serve JSON-RPC over WebSocket`,
    ...COMMANDS.map((c) => `       ${`app-server ${c.name} ${c.args}`.padEnd(USAGE_WIDTH)} ${c.summary}`),
    '',
    'Serves the codex app-server JSON-RPC protocol over WebSocket. `app-server COMMAND --help` describes a command.',
    '',
    optionsHelp(),
  ]
  return lines.join('\n')
}

export function commandHelp(command: CommandSpec): string {
  const lines = [`Usage: app-server ${command.name} ${command.args}`, '', `${command.summary[0]!.toUpperCase()}${command.summary.slice(1)}.`, ...command.details, '']
  if (command.name !== 'help') {
    lines.push(`Options: ${command.options ?? 'every `app-server` option applies (see `app-server --help`)'}`, '  -h, --help', '      print this help', '')
  }
  return lines.join('\n')
}
