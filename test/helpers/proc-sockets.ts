/**
 * A process's sockets as Linux's /proc shows them, for tests (and the memory bench) that check
 * what the engine process holds rather than what anybody reports about it.
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs'

/** Inodes of the sockets `pid` has open (from its descriptors' `socket:[INODE]` links). */
export function socketInodesOf(pid: number): string[] {
  const out: string[] = []
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`))
      if (m) out.push(m[1]!)
    } catch {
      // Closed while we looked.
    }
  }
  return out
}

/**
 * Connections the engine `pid` has accepted on its unix socket: of its sockets, those
 * /proc/net/unix lists as connected (state 03) under the path of the one it listens on (flag
 * __SO_ACCEPTCON). The path is read, not assumed: codex 0.169.0 binds in a directory of its
 * own (`/tmp/codex-daemon-*`) and links the socket it was asked for there.
 */
export function engineConnections(pid: number): number {
  const mine = new Set(socketInodesOf(pid))
  const rows = readFileSync('/proc/net/unix', 'utf8').split('\n').slice(1).map((line) => line.trim().split(/\s+/))
  const ofEngine = rows.filter((cols) => cols[6] !== undefined && mine.has(cols[6]))
  const listening = ofEngine.find((cols) => cols[3] === '00010000' && cols[7] !== undefined)
  if (listening === undefined) throw new Error('the engine has no listening unix socket')
  return ofEngine.filter((cols) => cols[5] === '03' && cols[7] === listening[7]).length
}
