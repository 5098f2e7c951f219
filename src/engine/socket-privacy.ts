/**
 * Whether anyone but this user could reach the engine's socket. codex 0.169.0 binds its real
 * socket under `/tmp/codex-daemon-<uid>/` and links the path it was given to it, so the 0700
 * check on the gateway's own socket directory does not cover it: after readiness the link is
 * followed and, in this order, the real socket and its directory must be ours and closed to
 * group and others. Anything else, or a path that cannot be followed, is a reason (no path in
 * it: it reaches `/healthz`); null when private.
 */
import { lstatSync, realpathSync, type Stats } from 'node:fs'
import { dirname } from 'node:path'

export function socketExposure(socketPath: string, uid: number | null = typeof process.getuid === 'function' ? process.getuid() : null): string | null {
  let real: string
  let socket: Stats
  let directory: Stats
  try {
    real = realpathSync(socketPath)
    socket = lstatSync(real)
    directory = lstatSync(dirname(real))
  } catch {
    return 'the engine socket cannot be checked'
  }
  if (!socket.isSocket()) return 'the engine socket is not a socket'
  if (!directory.isDirectory()) return 'the engine socket directory is not a directory'
  for (const [what, st] of [['socket', socket], ['socket directory', directory]] as const) {
    if (uid !== null && st.uid !== uid) return `the engine ${what} is not owned by this user`
    if ((st.mode & 0o077) !== 0) return `the engine ${what} is reachable by other users (mode ${(st.mode & 0o777).toString(8)})`
  }
  return null
}
