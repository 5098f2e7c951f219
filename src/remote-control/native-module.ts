/**
 * Whether remote control failed because better-sqlite3's compiled module cannot be loaded:
 * its install script did not run (`--ignore-scripts`, or an install-script policy that does
 * not allow it), or it was built for another Node.js. The server says so in plain words, with
 * the fix, instead of an opaque error type: the raw text holds paths and is withheld.
 */
/** The code the enrollment store gives this failure when it wraps it. */
export const NATIVE_MODULE_CODE = 'ERR_NATIVE_MODULE_MISSING'

const NATIVE_MODULE_FAILURES = [/Could not locate the bindings file/, /better_sqlite3\.node/, /NODE_MODULE_VERSION/, /ERR_DLOPEN_FAILED/, new RegExp(NATIVE_MODULE_CODE)]

export const NATIVE_MODULE_MISSING =
  "remote control unavailable: better-sqlite3's native module is not installed or not built for this Node.js (run `npm rebuild better-sqlite3` with install scripts allowed)"

export function isNativeModuleFailure(err: unknown): boolean {
  if (!(err instanceof Error)) return false
  const text = `${(err as { code?: string }).code ?? ''} ${err.message}`
  return NATIVE_MODULE_FAILURES.some((re) => re.test(text))
}
