import pretty from 'pino-pretty'
import type { DestinationStream } from 'pino'

/** Human-readable logs, for a terminal only (JSON lines otherwise); to stdout unless told `fd` 2. */
export function prettyDestination(fd: 1 | 2 = 1): DestinationStream {
  return pretty({ destination: fd, colorize: true, sync: true })
}
