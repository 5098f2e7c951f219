/**
 * Which `codex` binary runs the engine.
 *
 * Order: an explicit path (the operator's `--engine-bin`) wins; else the binary of the
 * installed `@openai/codex` package's platform package for this process's platform and arch.
 * Either way the file must exist, be a regular file and be executable. "Not installed" is an
 * answer, not an error: the caller gets a short reason (never a path: reasons reach `/healthz`
 * and the banner) and runs the gateway without an engine.
 *
 * The platform package is resolved from `@openai/codex`'s own location, not from ours: it is
 * that package's dependency, and package managers that do not hoist (pnpm) only make it
 * visible from there.
 */
import { execFile } from 'node:child_process'
import { accessSync, constants, readFileSync, statSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'

export const ENGINE_PACKAGE = '@openai/codex'

export interface EngineBinary {
  readonly path: string
  /** The codex version (`0.169.0`), or null when unknown (an explicit path not yet probed). */
  readonly version: string | null
}

export type EngineBinaryResolution = { readonly ok: true; readonly binary: EngineBinary } | { readonly ok: false; readonly reason: string }

export interface ResolveEngineBinaryOptions {
  /** An explicit binary path; when given, nothing else is tried. */
  readonly explicitPath?: string | null
  readonly platform?: NodeJS.Platform
  readonly arch?: string
  /** Where module resolution starts (a file URL or path); defaults to this module. */
  readonly resolveFrom?: string | URL
}

/** The platform packages `@openai/codex` ships, with the target triple each one's binary is built for. */
const PLATFORM_TARGETS: Readonly<Record<string, { readonly pkg: string; readonly triple: string }>> = {
  'linux-x64': { pkg: '@openai/codex-linux-x64', triple: 'x86_64-unknown-linux-musl' },
  'linux-arm64': { pkg: '@openai/codex-linux-arm64', triple: 'aarch64-unknown-linux-musl' },
  'darwin-x64': { pkg: '@openai/codex-darwin-x64', triple: 'x86_64-apple-darwin' },
  'darwin-arm64': { pkg: '@openai/codex-darwin-arm64', triple: 'aarch64-apple-darwin' },
  'win32-x64': { pkg: '@openai/codex-win32-x64', triple: 'x86_64-pc-windows-msvc' },
  'win32-arm64': { pkg: '@openai/codex-win32-arm64', triple: 'aarch64-pc-windows-msvc' },
}

export function resolveEngineBinary(options: ResolveEngineBinaryOptions = {}): EngineBinaryResolution {
  if (options.explicitPath !== undefined && options.explicitPath !== null) {
    const problem = executableProblem(options.explicitPath)
    return problem === null ? { ok: true, binary: { path: options.explicitPath, version: null } } : { ok: false, reason: `the configured engine binary ${problem}` }
  }
  const platform = options.platform ?? process.platform
  const arch = options.arch ?? process.arch
  // Android runs the linux build, as codex's own launcher does.
  const target = PLATFORM_TARGETS[`${platform === 'android' ? 'linux' : platform}-${arch}`]
  if (target === undefined) return { ok: false, reason: `${ENGINE_PACKAGE} has no build for ${platform}/${arch}` }

  const main = resolvePackageJson(createRequire(options.resolveFrom ?? import.meta.url), ENGINE_PACKAGE)
  if (main === null) return { ok: false, reason: `${ENGINE_PACKAGE} is not installed` }
  const version = readVersion(main)
  if (version === null) return { ok: false, reason: `${ENGINE_PACKAGE} is installed but its package.json has no version` }

  const platformPackageJson = resolvePackageJson(createRequire(main), target.pkg)
  if (platformPackageJson === null) return { ok: false, reason: `${target.pkg} (the engine for ${platform}/${arch}) is not installed` }
  const path = join(dirname(platformPackageJson), 'vendor', target.triple, 'bin', platform === 'win32' ? 'codex.exe' : 'codex')
  const problem = executableProblem(path)
  return problem === null ? { ok: true, binary: { path, version } } : { ok: false, reason: `the engine binary of ${target.pkg} ${problem}` }
}

/**
 * Asks a binary for its version (`codex --version` prints `codex-cli 0.169.0`), for an
 * explicit path whose package is unknown. Null when it cannot tell within `timeoutMs`.
 */
export function probeEngineVersion(path: string, timeoutMs = 10_000): Promise<string | null> {
  return new Promise((resolve) => {
    execFile(path, ['--version'], { timeout: timeoutMs, windowsHide: true }, (err, stdout) => {
      if (err !== null) return resolve(null)
      resolve(/^codex(?:-cli)?\s+(\S+)\s*$/m.exec(String(stdout))?.[1] ?? null)
    })
  })
}

function resolvePackageJson(require: NodeJS.Require, pkg: string): string | null {
  try {
    return require.resolve(`${pkg}/package.json`)
  } catch {
    return null
  }
}

function readVersion(packageJsonPath: string): string | null {
  try {
    const version = (JSON.parse(readFileSync(packageJsonPath, 'utf8')) as { version?: unknown }).version
    return typeof version === 'string' && version !== '' ? version : null
  } catch {
    return null
  }
}

/** Why `path` cannot be run ("does not exist", …), or null when it can. */
function executableProblem(path: string): string | null {
  let isFile: boolean
  try {
    isFile = statSync(path).isFile()
  } catch {
    return 'does not exist'
  }
  if (!isFile) return 'is not a file'
  try {
    accessSync(path, constants.X_OK)
  } catch {
    return 'is not executable'
  }
  return null
}
