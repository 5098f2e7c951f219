/**
 * The flooding side of flood.ts, in a process of its own so its busy event loop does not delay
 * the probes being timed: `node flood-clients.js URL N` opens N connections (`initialize` +
 * `initialized` each), prints `ready`, then sends `account/read` on each as fast as the
 * server takes it (never more than `CLIENT_BUFFER` bytes waiting on this side), reading and
 * dropping the replies, until killed. Each `REPORT_MS` it prints how many frames it has sent.
 */
import type WebSocket from 'ws'
import { initialized, open } from './measure.js'

const CLIENT_BUFFER = 256 * 1024
const BATCH = 64
/** One address may hold only so many sockets that have not finished their upgrade. */
const OPEN_BATCH = 16
const REPORT_MS = 1_000
const READ = '{"id":1,"method":"account/read","params":{}}'

const [url, count] = [process.argv[2]!, Number(process.argv[3])]
const sockets: WebSocket[] = []
for (let i = 0; i < count; i += OPEN_BATCH) {
  const batch = await Promise.all(Array.from({ length: Math.min(OPEN_BATCH, count - i) }, () => open(url)))
  await Promise.all(batch.map((ws) => initialized(ws)))
  for (const ws of batch) ws.on('error', () => ws.terminate())
  sockets.push(...batch)
}
process.stdout.write('ready\n')
let sent = 0
setInterval(() => process.stdout.write(`sent ${sent}\n`), REPORT_MS)
for (const ws of sockets) void flood(ws)

async function flood(ws: WebSocket): Promise<void> {
  while (ws.readyState === ws.OPEN) {
    if (ws.bufferedAmount < CLIENT_BUFFER) {
      for (let i = 0; i < BATCH; i++) ws.send(READ)
      sent += BATCH
      await new Promise<void>((resolve) => setImmediate(resolve))
    } else await new Promise<void>((resolve) => setTimeout(resolve, 5))
  }
}
