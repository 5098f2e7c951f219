/**
 * The small shared helpers in src/util, each against the inputs its callers meet: error codes
 * of any shape, header values, response headers, previews, JSON text, digests, UUIDs, Rust's
 * platform names, TypeBox (one bundled file at run time) and its nullables, and removing a file
 * only while it is unchanged.
 */
import t from 'tap'
import { createHash } from 'node:crypto'
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Compile, Type } from '../src/util/typebox.js'
import { byteCappedPreview, oneLinePreview } from '../src/util/body-preview.js'
import { errorCode, printableErrorCode } from '../src/util/error-code.js'
import { hasNoHeaderControls, isSendableHeaderValue, isVisibleAscii, replaceHeaderControls } from '../src/util/header-value.js'
import { isJsonObject, parseJsonObject, tryParseJson } from '../src/util/json.js'
import { fetchErrorCode, networkErrorText } from '../src/util/network-error.js'
import { REDACTED, REDACTED_FIELD_VALUE } from '../src/util/redaction-markers.js'
import { removeIfUnchanged } from '../src/util/remove-if-unchanged.js'
import { headerValue, requestIdOf } from '../src/util/response-headers.js'
import { rustArch, rustOs } from '../src/util/rust-platform.js'
import { sha256 } from '../src/util/sha256.js'
import { Nullable, OptionalNullable } from '../src/util/typebox-nullable.js'
import { isUuid } from '../src/util/uuid.js'

t.test('TypeBox runs from the one file the build bundled, licence included, and validates', async (t) => {
  const compiled = await readFile(fileURLToPath(new URL('../src/util/typebox.js', import.meta.url)), 'utf8')
  t.match(compiled, /^\/\/ Bundled by scripts\/bundle-typebox\.js from typebox@\d+\.\d+\.\d+ /, 'the build replaced the re-export with the bundle')
  t.notMatch(compiled, /(from|import\()\s*['"]typebox/, 'nothing is loaded from the package itself (its ~700 modules)')
  t.notMatch(compiled, /sourceMappingURL/, "no source map (tsc's would describe the re-export)")
  t.match(compiled, /\/\/ The MIT License \(MIT\)\n\/\/\n\/\/ Copyright \(c\) 2017-\d+ Haydn Paterson/, "TypeBox's licence heads the copy")
  const validator = Compile(Type.Object({ name: Type.String(), size: Type.Integer({ minimum: 0 }) }))
  t.ok(validator.Check({ name: 'a', size: 1 }))
  t.notOk(validator.Check({ name: 'a', size: -1 }), 'a bound is checked')
  t.notOk(validator.Check({ name: 1, size: 1 }), 'a type is checked')
})

t.test('error codes: any string code for branching; only code-shaped ones for messages', async (t) => {
  t.equal(errorCode(Object.assign(new Error('x'), { code: 'ENOENT' })), 'ENOENT')
  t.equal(errorCode({ code: 'some text' }), 'some text')
  t.equal(errorCode({ code: 42 }), undefined, 'a number is no code')
  for (const v of [null, undefined, 'ENOENT', 7]) t.equal(errorCode(v), undefined, `${String(v)}: none`)
  t.equal(printableErrorCode({ code: 'UND_ERR_SOCKET' }), 'UND_ERR_SOCKET')
  t.equal(printableErrorCode({ code: 'secret text' }), undefined, 'not code-shaped: withheld')
  t.equal(printableErrorCode({ code: 'A'.repeat(41) }), undefined, 'too long: withheld')
  t.equal(printableErrorCode({ code: '' }), undefined)
})

t.test('network errors: the cause code first, then the error own; text with or without it', async (t) => {
  t.equal(fetchErrorCode(new TypeError('fetch failed', { cause: { code: 'ECONNREFUSED' } })), 'ECONNREFUSED')
  t.equal(fetchErrorCode(Object.assign(new Error('x'), { code: 'ETIMEDOUT', cause: { code: 'nope nope' } })), 'ETIMEDOUT')
  t.equal(fetchErrorCode(new Error('ECONNRESET in the message only')), undefined, 'never read from the message')
  t.equal(fetchErrorCode(null), undefined)
  t.equal(networkErrorText(undefined), 'network error')
  t.equal(networkErrorText('ENOTFOUND'), 'network error (ENOTFOUND)')
})

t.test('header values: sendable (visible ASCII, no surrounding blanks) vs free of controls', async (t) => {
  t.ok(isVisibleAscii('Bearer abc\tdef ~'))
  t.notOk(isVisibleAscii('caf\u00e9'))
  t.notOk(isVisibleAscii('a\nb'))
  t.ok(isSendableHeaderValue('tok-en_1.2'))
  t.ok(isSendableHeaderValue(''), 'empty is a header value (callers that need one say so)')
  t.notOk(isSendableHeaderValue(' padded'))
  t.notOk(isSendableHeaderValue('tab\t'))
  t.notOk(isSendableHeaderValue('a\u0000b'))
  t.ok(hasNoHeaderControls('caf\u00e9 client\t1'), 'non-ASCII and tab are fine')
  t.notOk(hasNoHeaderControls('a\rb'))
  t.notOk(hasNoHeaderControls('a\u007fb'))
  t.equal(replaceHeaderControls('a\r\nb\u007fc\td'), 'a__b_c\td')
})

t.test('response headers: case-insensitive, first of repeated, printable; request id fallback', async (t) => {
  const fetched = new Headers({ 'X-Request-Id': 'req-1', 'cf-ray': 'ray-1' })
  t.equal(headerValue(fetched, 'x-request-id'), 'req-1')
  t.equal(requestIdOf(fetched), 'req-1')
  t.equal(requestIdOf(new Headers({ 'x-oai-request-id': 'oai-1' })), 'oai-1', 'x-oai-request-id when x-request-id is missing')
  t.equal(requestIdOf(new Headers()), null)
  t.equal(headerValue({ 'X-Request-Id': ['first', 'second'] }, 'x-request-id'), 'first')
  t.equal(headerValue({ 'cf-ray': 7 }, 'cf-ray'), '7')
  t.equal(headerValue({ 'x-request-id': 'a\nforged: line' }, 'x-request-id'), 'a?forged: line', 'no control characters')
  t.equal(headerValue({}, 'cf-ray'), null)
})

t.test('previews: one-line (chars, `(empty)`, `…`) and byte-capped (bytes, `<empty>`, `...`)', async (t) => {
  t.equal(oneLinePreview('  a\n\n b\t c ', false, 10), 'a b c')
  t.equal(oneLinePreview(' \n ', false, 10), '(empty)')
  t.equal(oneLinePreview('abcdefghij', false, 10), 'abcdefghij', 'exactly the limit')
  t.equal(oneLinePreview('abcdefghijk', false, 10), 'abcdefghi…')
  t.equal(oneLinePreview('abc', true, 10), 'abc…', 'a body cut while read is marked')
  t.equal(oneLinePreview(`abcdefg\u{1F600}x`, false, 9), 'abcdefg…', 'no half surrogate pair')
  const upper = (s: string) => s.toUpperCase()
  t.equal(byteCappedPreview('  abc  ', 10, upper), 'ABC', 'trimmed, then redacted')
  t.equal(byteCappedPreview(' \n', 10, upper), '<empty>')
  t.equal(byteCappedPreview('x'.repeat(11), 10, (s) => s), `${'x'.repeat(10)}...`)
  t.equal(byteCappedPreview(`xxxxxxxxx\u00e9`, 10, (s) => s), 'xxxxxxxxx...', 'cut before a two-byte character, not inside it')
  t.equal(byteCappedPreview(`xxxxxxxx\u00e9`, 10, (s) => s), `xxxxxxxx\u00e9`, 'exactly 10 bytes')
})

t.test('redaction markers: two meanings, two spellings', async (t) => {
  t.equal(REDACTED, '[redacted]')
  t.equal(REDACTED_FIELD_VALUE, '<redacted>')
})

t.test('JSON: parse failures are values, objects are checked', async (t) => {
  t.same(tryParseJson('{"a":1}'), { a: 1 })
  t.equal(tryParseJson('null'), null, 'null is JSON')
  t.equal(tryParseJson('{"a":'), undefined)
  t.equal(tryParseJson(''), undefined)
  t.ok(isJsonObject({}))
  for (const v of [null, [], 'x', 1, undefined]) t.notOk(isJsonObject(v), `${JSON.stringify(v)} is no object`)
  t.same(parseJsonObject('{"a":[1]}'), { a: [1] })
  t.equal(parseJsonObject('[1]'), null)
  t.equal(parseJsonObject('nope'), null)
})

t.test('sha256: the digest of a string or bytes', async (t) => {
  const expected = createHash('sha256').update('abc').digest()
  t.ok(sha256('abc').equals(expected))
  t.ok(sha256(Buffer.from('abc')).equals(expected))
  t.equal(sha256('').toString('hex'), 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855')
})

t.test('isUuid: any version, either case, nothing around it', async (t) => {
  t.ok(isUuid('123e4567-e89b-12d3-a456-426614174000'))
  t.ok(isUuid('123E4567-E89B-12D3-A456-426614174000'))
  t.notOk(isUuid(' 123e4567-e89b-12d3-a456-426614174000'))
  t.notOk(isUuid('123e4567e89b12d3a456426614174000'))
  t.notOk(isUuid('123e4567-e89b-12d3-a456-42661417400g'))
})

t.test('Rust platform names: codex spelling, unknown names pass through', async (t) => {
  t.same(['x64', 'arm64', 'ia32', 'ppc64', 'loong64', 's390x'].map(rustArch), ['x86_64', 'aarch64', 'x86', 'powerpc64', 'loongarch64', 's390x'])
  t.same(['darwin', 'win32', 'sunos', 'linux', 'freebsd'].map(rustOs), ['macos', 'windows', 'solaris', 'linux', 'freebsd'])
})

t.test('TypeBox nullables: Nullable must be present; OptionalNullable may be absent', async (t) => {
  const schema = Compile(Type.Object({ a: Nullable(Type.String()), b: OptionalNullable(Type.Integer()) }))
  t.ok(schema.Check({ a: 'x' }))
  t.ok(schema.Check({ a: null, b: null }))
  t.ok(schema.Check({ a: null, b: 3 }))
  t.notOk(schema.Check({}), 'a is required')
  t.notOk(schema.Check({ a: 1 }))
  t.notOk(schema.Check({ a: null, b: 'x' }))
})

t.test('removeIfUnchanged: removes only the content judged, puts back a replacement, leaves nothing aside', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'util-remove-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const path = join(dir, 'file')

  await writeFile(path, 'bad')
  t.equal(await removeIfUnchanged(path, 'bad', 'invalid'), true, 'the judged content is removed')
  t.same(await readdir(dir), [], 'gone, nothing aside')

  t.equal(await removeIfUnchanged(path, 'bad', 'invalid'), false, 'a missing file: false')

  await writeFile(path, 'fresh')
  t.equal(await removeIfUnchanged(path, 'bad', 'invalid'), false, 'replaced since it was judged: kept')
  t.equal(await readFile(path, 'utf8'), 'fresh', 'the replacement is back in place')
  t.same(await readdir(dir), ['file'], 'nothing left aside')

  await t.rejects(removeIfUnchanged(join(path, 'child'), 'x', 'x'), { code: 'ENOTDIR' }, 'other failures are thrown for the caller to word')
})
