/**
 * `app-server list [--json]`: the servers running with this home, from their runtime files.
 * A person at a terminal gets one line each; a pipe (or `--json`) gets one JSON array, the
 * runtime files' own fields.
 */
import { readRuntimeFiles, type RuntimeInfo } from './runtime-file.js'

export function runListCommand(home: string, options: { json: boolean; stdout: NodeJS.WriteStream }): number {
  const servers = readRuntimeFiles(home, { prune: false })
  if (options.json || !options.stdout.isTTY) {
    options.stdout.write(JSON.stringify(servers) + '\n')
    return 0
  }
  if (servers.length === 0) options.stdout.write(`no running servers use ${home}\n`)
  for (const s of servers) options.stdout.write(describe(s) + '\n')
  return 0
}

function describe(s: RuntimeInfo): string {
  const where = s.credential.path === undefined ? s.credential.how : `${s.credential.how}: ${s.credential.path}`
  return `${s.url}  pid ${s.pid}  app-server ${s.version}  auth ${s.auth} (${where})`
}
