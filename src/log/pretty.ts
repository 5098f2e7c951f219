import pretty from 'pino-pretty'
import type { DestinationStream } from 'pino'

/** Human-readable logs, for a terminal only (JSON lines otherwise). */
export function prettyDestination(): DestinationStream {
  return pretty({ destination: 1, colorize: true, sync: true })
}
