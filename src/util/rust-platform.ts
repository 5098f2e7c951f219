/**
 * Node's platform and architecture names as Rust's `std::env::consts::OS` / `ARCH` spell
 * them: codex reports these (user agent, remote control enrollment), and the backend and
 * clients expect its spelling.
 */
const RUST_OS: Readonly<Record<string, string>> = { darwin: 'macos', win32: 'windows', sunos: 'solaris' }
const RUST_ARCH: Readonly<Record<string, string>> = { x64: 'x86_64', arm64: 'aarch64', ia32: 'x86', ppc64: 'powerpc64', loong64: 'loongarch64' }

/** e.g. `darwin` → `macos`; names Rust shares with Node pass through. */
export function rustOs(nodePlatform: string): string {
  return RUST_OS[nodePlatform] ?? nodePlatform
}

/** e.g. `x64` → `x86_64`; names Rust shares with Node pass through. */
export function rustArch(nodeArch: string): string {
  return RUST_ARCH[nodeArch] ?? nodeArch
}
