/**
 * The engine's output as gateway log lines: one line per line, `source: "engine"` (the
 * supervisor's child logger carries it), terminal colours removed, scrubbed like every other
 * line (query values, bearer credentials) and capped, so a runaway line cannot flood the log.
 *
 * Level: codex's tracing lines name theirs (`<time> ERROR target: …`), and keep it; so do its
 * plain `Error:` / `WARNING:` lines. Notices known to be harmless here drop to info, and other
 * stderr lines (backtraces, continuation lines) are info. stdout
 * (the engine writes nothing there when it listens on a socket) is debug.
 */
import type { AppLogger } from '../log/logger.js'
import { scrubText } from '../log/scrub.js'

export const MAX_ENGINE_LINE_CHARS = 2_000

type Level = 'trace' | 'debug' | 'info' | 'warn' | 'error'

// CSI sequences (colours, cursor moves) that codex writes when it thinks stderr is a terminal.
const ANSI_ESCAPE = /\x1b\[[0-?]*[ -/]*[@-~]/g
const TRACING_LEVEL = /^\S+\s+(ERROR|WARN|INFO|DEBUG|TRACE)\s/
const LEVELS: Readonly<Record<string, Level>> = { ERROR: 'error', WARN: 'warn', INFO: 'info', DEBUG: 'debug', TRACE: 'trace' }
// What codex prints outside tracing: `Error: …` before it exits (a bad `-c` value, say), `WARNING: …`.
const PLAIN_LEVEL = /^(Error|WARNING):/

/**
 * Said on every start on a host without bubblewrap (the engine uses its bundled copy) or with
 * a home under /tmp (no PATH helper links): nothing an operator must act on.
 */
const HARMLESS_NOTICES: readonly RegExp[] = [/could not find bubblewrap/i, /could not create PATH aliases/i]

export class EngineOutputLog {
  constructor(private readonly log: AppLogger) {}

  stderr(raw: string): void {
    const text = cleanLine(raw)
    if (text === '') return
    this.log[levelOf(text)]({ stream: 'stderr' }, text)
  }

  stdout(raw: string): void {
    const text = cleanLine(raw)
    if (text !== '') this.log.debug({ stream: 'stdout' }, text)
  }
}

function cleanLine(raw: string): string {
  const text = raw.replace(ANSI_ESCAPE, '').trimEnd()
  const capped = text.length > MAX_ENGINE_LINE_CHARS ? `${text.slice(0, MAX_ENGINE_LINE_CHARS)}… [${text.length - MAX_ENGINE_LINE_CHARS} more chars]` : text
  return scrubText(capped)
}

function levelOf(text: string): Level {
  if (HARMLESS_NOTICES.some((re) => re.test(text))) return 'info'
  const named = TRACING_LEVEL.exec(text)?.[1]
  if (named !== undefined) return LEVELS[named]!
  const plain = PLAIN_LEVEL.exec(text)?.[1]
  return plain === 'Error' ? 'error' : plain === 'WARNING' ? 'warn' : 'info'
}
