/**
 * Where each setting's text comes from, before any of it is parsed. Layers, highest first:
 * the command line, the process environment, the `.env` file, the flag table's default. Each
 * setting remembers the layer that gave it, so callers can ask whether a user chose a value
 * (for example the CLI's quieter default log level) instead of re-reading argv and env.
 *
 * An empty environment or `.env` value (`APP_SERVER_WS_AUTH=`, as `.env.example` spells every
 * setting) is the same as an absent one: that layer gives nothing. `APP_SERVER_*` names the
 * table does not know are collected, so a typo is reported by name instead of ignored.
 */
import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { parseArgs, parseEnv } from 'node:util'
import { ConfigError, shown } from './errors.js'
import { ENV_ONLY, envName, FLAGS, type EnvOnlyName, type FlagKey, type RawSetting, type SettingName } from './flags.js'
import type { ValueSource } from './types.js'
import { errorCode } from '../util/error-code.js'

export interface RawSettings {
  /** `APP_SERVER_*` names in the environment or `.env` that are no setting, with where each was. */
  readonly unknown: readonly { readonly name: string; readonly source: 'env' | '.env' }[]
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
    if (env !== undefined && env.trim() !== '') return { raw: env, source: 'env' }
    const file = dotenv[name]
    return file !== undefined && file.trim() !== '' ? { raw: file, source: '.env' } : null
  }
  const flags = new Map(FLAGS.map((f) => [f.key, f]))
  return {
    unknown: [...unknownNames(options.env, 'env'), ...unknownNames(dotenv, '.env')],
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

const KNOWN_ENV_NAMES = new Set(FLAGS.map((f) => envName(f.name)))

function unknownNames(vars: Readonly<Record<string, string | undefined>>, source: 'env' | '.env'): { name: string; source: 'env' | '.env' }[] {
  return Object.keys(vars)
    .filter((name) => name.startsWith('APP_SERVER_') && !KNOWN_ENV_NAMES.has(name))
    .sort()
    .map((name) => ({ name, source }))
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
    const { values } = parseArgs({ args: joinFlagValues(argv), options, strict: true, allowPositionals: false })
    return values as Record<string, string | string[] | true | undefined>
  } catch (err) {
    throw new ConfigError(describeArgError(err))
  }
}

/**
 * `--flag value` → `--flag=value` for the flags that take a value, so a value that starts with a
 * dash (`--rpc-rate -1`) reaches the flag's own parser and its refusal, instead of Node's
 * `argument is ambiguous`. A value flag followed by another `--flag`, or by nothing, is missing
 * its value; a switch given a value (`--no-token-check=yes`) takes none.
 */
function joinFlagValues(argv: readonly string[]): string[] {
  const byName = new Map(FLAGS.map((f) => [f.name, f]))
  const out: string[] = []
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    if (arg === '--') {
      out.push(...argv.slice(i))
      break
    }
    const m = /^--([^=]+)(=.*)?$/s.exec(arg)
    const spec = m ? byName.get(m[1]!) : undefined
    if (!m || !spec) {
      out.push(arg)
      continue
    }
    const shape = `'--${spec.name}${spec.valueName ? ` <${spec.valueName}>` : ''}'`
    if (spec.kind === 'boolean') {
      if (m[2] !== undefined) throw new ConfigError(`unexpected value '${shown(m[2].slice(1))}' for ${shape} found; it takes no value`)
      out.push(arg)
    } else if (m[2] !== undefined) {
      out.push(arg)
    } else {
      const value = argv[i + 1]
      if (value === undefined || value.startsWith('--')) throw new ConfigError(`a value is required for ${shape} but none was supplied`)
      out.push(`--${spec.name}=${value}`)
      i++
    }
  }
  return out
}

function describeArgError(err: unknown): string {
  const e = err as { code?: string; message?: string }
  const message = e.message ?? String(err)
  if (e.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' || e.code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') {
    const arg = /'([^']+)'/.exec(message)?.[1] ?? 'argument'
    return `unexpected argument '${arg}' found (see --help)`
  }
  // Missing and unwanted values were refused in our own words before parseArgs ran.
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
