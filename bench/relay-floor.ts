/**
 * The floor for a gateway in Node: a WebSocket relay with no logic at all, in front of the same
 * engine. One upstream `ws+unix://SOCKET:/` per client, opened with the gateway's own upstream
 * options (`ENGINE_SOCKET_OPTIONS`); text frames pass both ways as they are (frames a client sends before its upstream
 * is open wait for it). No auth, no parsing, no ids, no limits. What it costs per request is
 * what any Node relay built on `ws` costs on this machine; the gateway's own work is the rest.
 *
 *   node relay-floor.js SOCKET    (prints `listening on: ws://127.0.0.1:PORT/` on stderr)
 */
import type { AddressInfo } from 'node:net'
import WebSocket, { WebSocketServer } from 'ws'
import { ENGINE_SOCKET_OPTIONS } from '../src/engine/upstream.js'

const socketPath = process.argv[2]
if (socketPath === undefined) {
  process.stderr.write('usage: relay-floor SOCKET\n')
  process.exit(2)
}
const upstreamUrl = `ws+unix://${socketPath}:/`

const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false })
wss.on('connection', (client) => {
  const upstream = new WebSocket(upstreamUrl, ENGINE_SOCKET_OPTIONS)
  const early: string[] = []
  upstream.on('open', () => {
    for (const text of early.splice(0)) upstream.send(text)
  })
  client.on('message', (data, isBinary) => {
    if (isBinary) return
    const text = data.toString()
    if (upstream.readyState === WebSocket.OPEN) upstream.send(text)
    else early.push(text)
  })
  upstream.on('message', (data, isBinary) => {
    if (!isBinary) client.send(data.toString())
  })
  client.on('close', () => upstream.terminate())
  upstream.on('close', () => client.terminate())
  client.on('error', () => client.terminate())
  upstream.on('error', () => upstream.terminate())
})
wss.on('listening', () => {
  const { port } = wss.address() as AddressInfo
  process.stderr.write(`listening on: ws://127.0.0.1:${port}/\n`)
})
process.on('SIGTERM', () => process.exit(0))
