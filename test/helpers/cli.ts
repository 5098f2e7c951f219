/**
 * The CLI's commands that finish (`login`, `logout`, `status`, `--help`) run inside the test
 * process: the same `runCli` that `dist/src/main.js` calls, with the same clean environment the
 * subprocess runner gives (`cliEnv`), stdin from a string, stdout and stderr collected. A
 * subprocess costs a node start-up plus the account service's imports (most of a second of CPU);
 * this costs milliseconds, so a test about what a command does runs here, and a test about the
 * process itself (its exit status, signals, the real binary's streams) uses `runCli` from
 * `process.ts`.
 *
 * Never a command that starts a server: that one installs signal handlers and keeps running.
 * The working directory (where `.env` is read) is this process's, as `runCli` in `process.ts`
 * defaults to. stdout is recorded for the leak check, as there.
 */
import { Readable, Writable } from 'node:stream'
import { runCli } from '../../src/cli/run.js'
import { record } from './canary.js'
import { cliEnv } from './process.js'

export interface CommandResult {
  /** What `main.js` would set as the exit code. */
  code: number
  stdout: string
  stderr: string
}

const FINISHING_COMMANDS = new Set(['login', 'logout', 'status'])

/** A stream that appends what is written to it, standing in for a terminal's stdout or stderr. */
function collector(append: (text: string) => void): NodeJS.WriteStream {
  const sink = new Writable({
    write(chunk: Buffer | string, _enc, done) {
      append(chunk.toString())
      done()
    },
  })
  // runCli writes and checks isTTY only; a collector is not a terminal.
  return Object.assign(sink, { isTTY: false }) as unknown as NodeJS.WriteStream
}

export async function runCommand(
  args: readonly string[],
  options: {
    env?: Record<string, string>
    input?: string
    onStderr?: (text: string) => void
    /** stdin stands for a terminal (`isTTY`), as when a person runs the command and types. */
    stdinIsTTY?: boolean
    /** A command that would serve (`remote-control`) but must refuse and finish here; should it serve instead, the test hangs and fails. */
    refusesToServe?: boolean
  } = {},
): Promise<CommandResult> {
  if (!FINISHING_COMMANDS.has(args[0] ?? '') && !args.includes('--help') && !args.includes('-h') && options.refusesToServe !== true) {
    throw new Error(`runCommand runs commands that finish; \`${args.join(' ')}\` would start a server (use startCli)`)
  }
  let stdout = ''
  let stderr = ''
  const code = await runCli(args, {
    env: cliEnv(options.env),
    stdout: collector((s) => (stdout += s)),
    stderr: collector((s) => {
      stderr += s
      options.onStderr?.(stderr)
    }),
    stdin: Object.assign(Readable.from(options.input === undefined ? [] : [Buffer.from(options.input)]), { isTTY: options.stdinIsTTY === true }),
  })
  record(stdout)
  return { code, stdout, stderr }
}
