/**
 * The floor for Node: a bare `ws` server doing what app-server must do at minimum — the same
 * constant-time query-token check before the 101, and a fixed JSON answer to each message.
 * Prints its URL on stderr as `listening on: ws://...`.
 */
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { WebSocketServer } from 'ws'
import { generateConnectionToken, matchesDigest } from '../src/auth/token.js'
import { sha256 } from '../src/util/sha256.js'
import { readQueryToken } from '../src/auth/query-token.js'

const token = generateConnectionToken()
const digest = sha256(token)
const answer = (id: unknown) => `{"id":${JSON.stringify(id)},"result":{"account":null,"requiresOpenaiAuth":true}}`

const wss = new WebSocketServer({ noServer: true, maxPayload: 16 * 1024 * 1024 })
const server = createServer((_req, res) => {
  res.writeHead(400).end()
})
server.on('upgrade', (req, socket, head) => {
  const found = readQueryToken(req.url ?? '/')
  if (found.kind !== 'present' || !matchesDigest(found.token, digest)) {
    socket.end('HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n')
    return
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    ws.on('message', (data) => {
      let id: unknown = null
      try {
        id = (JSON.parse(data.toString()) as { id?: unknown }).id ?? null
      } catch {
        return
      }
      ws.send(answer(id))
    })
  })
})
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address() as AddressInfo
  process.stderr.write(`listening on: ws://127.0.0.1:${port}/?token=${token}\n`)
})
process.on('SIGTERM', () => process.exit(0))
