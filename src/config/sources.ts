/**
 * Where each setting's text comes from, before any of it is parsed. Layers, highest first:
 * the command line, the process environment, the `.env` file, the flag table's default. Each
 * setting remembers the layer that gave it, so callers can ask whether a user chose a value
 * (for example the CLI's quieter default log level) instead of re-reading argv and env.
 */
import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { parseArgs, parseEnv } from 'node:util'
import { ConfigError } from './errors.js'
import { ENV_ONLY, envName, FLAGS, type EnvOnlyName, type FlagKey, type RawSetting, type SettingName } from './flags.js'
import type { ValueSource } from './types.js'
import { errorCode } from '../util/error-code.js'

export interface RawSettings {
  /** The text (or list items) a layer gave the flag, with that layer; `null` when none did. */
  flag(key: FlagKey): { readonly raw: RawSetting; readonly source: Exclude<ValueSource, 'default'> } | null
  envOnly(name: EnvOnlyName): { readonly raw: string; readonly source: Exclude<ValueSource, 'default'> } | null
}

export interface SourceOptions {
  /** The process environment (tests pass their own). */
  readonly env: Readonly<Record<string, string | undefined>>
  /** `.env` file read below the environment; `null` reads none. Default `./.env`. */
  readonly dotenvPath?: string | null
}

export function readSources(argv: readonly string[], options: SourceOptions): RawSettings {
  const cli = parseCommandLine(argv)
  const dotenv = readDotenv(options.dotenvPath === undefined ? '.env' : options.dotenvPath)
  const fromEnvironment = (name: string): { raw: string; source: 'env' | '.env' } | null => {
    const env = options.env[name]
    if (env !== undefined) return { raw: env, source: 'env' }
    const file = dotenv[name]
    return file !== undefined ? { raw: file, source: '.env' } : null
  }
  const flags = new Map(FLAGS.map((f) => [f.key, f]))
  return {
    flag(key) {
      const spec = flags.get(key)!
      const given = cli[spec.name]
      if (given !== undefined) return { raw: given === true ? 'true' : given, source: 'flag' }
      const env = fromEnvironment(envName(spec.name))
      if (env === null) return null
      return spec.kind === 'list' ? { raw: (spec.splitEnv ?? splitList)(env.raw), source: env.source } : env
    },
    envOnly: (name) => fromEnvironment(name),
  }
}

/** Which layer gave each setting, for the config's record. */
export function sourcesOf(settings: RawSettings): Readonly<Record<SettingName, ValueSource>> {
  const out: Partial<Record<SettingName, ValueSource>> = {}
  for (const f of FLAGS) out[f.key] = settings.flag(f.key)?.source ?? 'default'
  for (const e of ENV_ONLY) out[e.name] = settings.envOnly(e.name)?.source ?? 'default'
  return out as Record<SettingName, ValueSource>
}

function splitList(text: string): string[] {
  return text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
}

function parseCommandLine(argv: readonly string[]): Record<string, string | string[] | true | undefined> {
  const options: Record<string, { type: 'string' | 'boolean'; multiple?: boolean }> = {}
  for (const f of FLAGS) {
    options[f.name] = f.kind === 'boolean' ? { type: 'boolean' } : { type: 'string', multiple: f.kind === 'list' }
  }
  try {
    const { values } = parseArgs({ args: [...argv], options, strict: true, allowPositionals: false })
    return values as Record<string, string | string[] | true | undefined>
  } catch (err) {
    throw new ConfigError(describeArgError(err))
  }
}

function describeArgError(err: unknown): string {
  const e = err as { code?: string; message?: string }
  const message = e.message ?? String(err)
  if (e.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' || e.code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') {
    const arg = /'([^']+)'/.exec(message)?.[1] ?? 'argument'
    return `unexpected argument '${arg}' found (see --help)`
  }
  // parseArgs' own wording for a flag with a missing value or a value on a boolean flag.
  return message.split('\n')[0] ?? 'invalid arguments'
}

/** Node's own `.env` parser; a missing file is no error (it is optional). */
function readDotenv(path: string | null): Readonly<Record<string, string | undefined>> {
  if (path === null) return {}
  let text: string
  try {
    text = readFileSync(resolve(path), 'utf8')
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return {}
    throw new ConfigError(`failed to read environment: ${(err as Error).message}`)
  }
  return parseEnv(text)
}
