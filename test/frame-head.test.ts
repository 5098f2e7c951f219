/**
 * Routing engine frames on their head (`method` or `id`) without parsing them, and rewriting a
 * frame's `id` in place: odd and hostile frames either get the answer a full parse gives, or
 * none (the caller then parses in full). Never a wrong answer.
 */
import t from 'tap'
import { frameHead } from '../src/engine/frame-head.js'
import { withFrameId } from '../src/engine/frame-id.js'
import { parseIncoming } from '../src/rpc/wire.js'

/** What a full parse says the routing facts are, for comparison. */
function byFullParse(text: string): unknown {
  const msg = parseIncoming(text)
  if (typeof msg === 'string') return msg
  if (msg.kind === 'notification') return { kind: 'notification', method: msg.method }
  if (msg.kind === 'response') return { kind: 'response', id: msg.id }
  return msg.kind
}

const ROUTED: readonly [string, string, unknown][] = [
  ['a delta', '{"method":"item/agentMessage/delta","params":{"threadId":"t","delta":"hi"}}', { kind: 'notification', method: 'item/agentMessage/delta' }],
  ['params before method', '{"params":{"a":1},"method":"turn/started"}', { kind: 'notification', method: 'turn/started' }],
  ['no params', '{"method":"x"}', { kind: 'notification', method: 'x' }],
  ['whitespace everywhere', ' \n{ "method" :\t"x" ,\r\n "params" : { } }\n ', { kind: 'notification', method: 'x' }],
  ['an `id` and a `method` nested in params', '{"method":"x","params":{"id":5,"method":"y","result":{}}}', { kind: 'notification', method: 'x' }],
  ['an `id` inside a string', '{"method":"x","params":{"text":"\\",\\"id\\":1,\\""}}', { kind: 'notification', method: 'x' }],
  ['escaped quotes and brackets in strings', '{"method":"x","params":{"delta":"a \\"q\\" } { ] [ \\\\"}}', { kind: 'notification', method: 'x' }],
  ['arrays of objects', '{"method":"x","params":[{"id":1},[{"id":2}],"]"]}', { kind: 'notification', method: 'x' }],
  ['a member the protocol ignores', '{"jsonrpc":"2.0","method":"x"}', { kind: 'notification', method: 'x' }],
  ['a non-ASCII method', '{"method":"é/ü","params":null}', { kind: 'notification', method: 'é/ü' }],
  ['a result with a number id', '{"id":7,"result":{"data":[]}}', { kind: 'response', id: 7 }],
  ['a result with a string id', '{"result":{"id":"inner"},"id":"outer"}', { kind: 'response', id: 'outer' }],
  ['a negative id', '{"id":-3,"result":null}', { kind: 'response', id: -3 }],
  ['the largest safe id', `{"id":${Number.MAX_SAFE_INTEGER},"result":1}`, { kind: 'response', id: Number.MAX_SAFE_INTEGER }],
  ['a result that is a string with braces', '{"id":1,"result":"}{"}', { kind: 'response', id: 1 }],
]

for (const [what, text, head] of ROUTED) {
  t.test(`routed on its head: ${what}`, async (t) => {
    t.same(frameHead(text), head)
    t.same(byFullParse(text), head, 'as a full parse says')
  })
}

const LEFT_TO_A_FULL_PARSE: readonly [string, string][] = [
  ['a request (needs its params)', '{"id":1,"method":"item/tool/call","params":{}}'],
  ['an error reply (its error is checked)', '{"error":{"code":-32600,"message":"no"},"id":1}'],
  ['a method with escapes', '{"method":"item\\/x"}'],
  ['a key with escapes that means id', '{"method":"x","\\u0069d":1}'],
  ['a key with escapes in a reply', '{"\\u0069d":1,"result":{}}'],
  ['method twice', '{"method":"account/updated","method":"x"}'],
  ['id twice', '{"id":1,"result":{},"id":2}'],
  ['result twice', '{"id":1,"result":{},"result":2}'],
  ['result and error', '{"id":1,"result":{},"error":{"code":1,"message":"m"}}'],
  ['no result', '{"id":1}'],
  ['a method that is no string', '{"method":5}'],
  ['a null method', '{"method":null}'],
  ['an id that is null', '{"id":null,"result":{}}'],
  ['an id that is true', '{"id":true,"result":{}}'],
  ['an id with a fraction', '{"id":1.5,"result":{}}'],
  ['an id with an exponent', '{"id":1e3,"result":{}}'],
  ['an id past 2^53', '{"id":9007199254740993,"result":{}}'],
  ['an id with a leading zero', '{"id":01,"result":{}}'],
  ['an id string with escapes', '{"id":"a\\"b","result":{}}'],
  ['an array', '[{"method":"x"}]'],
  ['a string', '"x"'],
  ['nothing', ''],
  ['an empty object', '{}'],
  ['text after the object', '{"method":"x"} x'],
  ['two objects', '{"method":"x"}{"id":1,"result":{}}'],
  ['an unterminated string', '{"method":"x","params":{"a":"b}}'],
  ['an unclosed object', '{"method":"x","params":{"a":1}'],
  ['a missing colon', '{"method" "x"}'],
  ['a missing comma', '{"method":"x" "params":{}}'],
  ['a trailing comma', '{"method":"x",}'],
]

for (const [what, text] of LEFT_TO_A_FULL_PARSE) {
  t.test(`left to a full parse: ${what}`, async (t) => {
    t.equal(frameHead(text), null)
  })
}

t.test('withFrameId rewrites only the top-level id, byte for byte elsewhere', async (t) => {
  const text = '{ "id" : 12, "method":"item/tool/call","params":{"id":99,"big":123456789012345678901234567890,"s":"\\"id\\":1"}}'
  t.equal(
    withFrameId(text, 'c-1'),
    '{ "id" : "c-1", "method":"item/tool/call","params":{"id":99,"big":123456789012345678901234567890,"s":"\\"id\\":1"}}',
  )
  t.equal(withFrameId('{"result":{"id":1},"id":"e-5"}', 3), '{"result":{"id":1},"id":3}', 'wherever the id member is')
})

t.test('withFrameId gives null when the id is not certain', async (t) => {
  t.equal(withFrameId('{"method":"x","params":{"id":1}}', 1), null, 'no top-level id')
  t.equal(withFrameId('{"id":1,"result":{},"id":2}', 3), null, 'id twice (a parser would take the last)')
  t.equal(withFrameId('{"\\u0069d":1,"result":{}}', 3), null, 'a key written with escapes')
  t.equal(withFrameId('[{"id":1}]', 3), null, 'not an object')
  t.equal(withFrameId('{"id":1,"result":{}', 3), null, 'unclosed')
})
