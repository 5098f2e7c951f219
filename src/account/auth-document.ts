/**
 * The stored `auth.json` document: its schema, reading it from text, and converting it to and
 * from the in-memory `Credential`. Every store (file, keyring, auto, ephemeral) persists this
 * same document, so this is the one place that knows its shape.
 *
 * Reading is strict about the fields it knows and ignores the rest; `null` for `auth_mode`,
 * `tokens` and `last_refresh` means absent (codex writes `"tokens": null`). A document that
 * does not fit is a `CorruptStoreError` naming the offending field, never its value.
 */
import { Type, Compile, type Static } from '../util/typebox.js'
import { schemaProblem } from './schema-problem.js'
import { CorruptStoreError, type AuthDotJson, type Credential } from './types.js'
import { OptionalNullable } from '../util/typebox-nullable.js'
import { tryParseJson } from '../util/json.js'


const StoredTokensSchema = Type.Object({
  id_token: Type.String(),
  access_token: Type.String(),
  refresh_token: Type.String(),
  account_id: OptionalNullable(Type.String()),
})

export const AuthDotJsonSchema = Type.Object({
  OPENAI_API_KEY: OptionalNullable(Type.String()),
  auth_mode: OptionalNullable(Type.Union([Type.Literal('apikey'), Type.Literal('chatgpt')])),
  tokens: OptionalNullable(StoredTokensSchema),
  /** RFC 3339. */
  last_refresh: OptionalNullable(Type.String()),
})

const authDotJson = Compile(AuthDotJsonSchema)

/** Checks `value` against the schema and returns a fresh copy holding only the known fields. */
function parseAuthDotJson(value: unknown, source: string, location: string): AuthDotJson {
  const problem = schemaProblem(authDotJson, value)
  if (problem !== null) throw corrupt(`${source} has an unexpected shape: ${problem}`, source, location)
  const doc = value as Static<typeof AuthDotJsonSchema>
  const out: AuthDotJson = { OPENAI_API_KEY: doc.OPENAI_API_KEY ?? null }
  if (doc.auth_mode != null) out.auth_mode = doc.auth_mode
  if (doc.tokens != null) {
    const t = doc.tokens
    out.tokens = { id_token: t.id_token, access_token: t.access_token, refresh_token: t.refresh_token, account_id: t.account_id ?? null }
  }
  if (doc.last_refresh != null) out.last_refresh = doc.last_refresh
  return out
}

/**
 * Parses stored JSON text. A SyntaxError's message quotes the text, so it is never passed on.
 * `source` names the document for clients (`auth.json`); `location` for logs (its path).
 */
export function parseAuthText(text: string, source: string, location: string = source): AuthDotJson {
  const value = tryParseJson(text)
  if (value === undefined) throw corrupt(`${source} is not valid JSON`, source, location)
  return parseAuthDotJson(value, source, location)
}

function corrupt(message: string, source: string, location: string): CorruptStoreError {
  return new CorruptStoreError(message, location === source ? message : `${location}: ${message}`)
}

/** The credential a stored document holds: ChatGPT tokens win unless the mode says API key. */
export function credentialFromDocument(doc: AuthDotJson | null): Credential | null {
  if (doc === null) return null
  if (doc.tokens && doc.auth_mode !== 'apikey') {
    const t = doc.tokens
    const lastRefresh = doc.last_refresh ? new Date(doc.last_refresh) : null
    return {
      kind: 'chatgptManaged',
      tokens: { idToken: t.id_token, accessToken: t.access_token, refreshToken: t.refresh_token, accountId: t.account_id },
      lastRefresh: lastRefresh && !Number.isNaN(lastRefresh.getTime()) ? lastRefresh : null,
    }
  }
  if (typeof doc.OPENAI_API_KEY === 'string' && doc.OPENAI_API_KEY.length > 0) return { kind: 'apiKey', apiKey: doc.OPENAI_API_KEY }
  return null
}

export function managedDocument(c: Extract<Credential, { kind: 'chatgptManaged' }>): AuthDotJson {
  return {
    auth_mode: 'chatgpt',
    OPENAI_API_KEY: null,
    tokens: {
      id_token: c.tokens.idToken,
      access_token: c.tokens.accessToken,
      refresh_token: c.tokens.refreshToken,
      account_id: c.tokens.accountId,
    },
    ...(c.lastRefresh ? { last_refresh: c.lastRefresh.toISOString() } : {}),
  }
}

export function apiKeyDocument(apiKey: string): AuthDotJson {
  return { auth_mode: 'apikey', OPENAI_API_KEY: apiKey }
}
