// Lint: typescript-eslint's type-checked recommended rules over every TypeScript
// tree that tsc compiles (src plugins routes test bench). Type information comes
// from the project service, so the lint sees exactly what `tsc` sees.
import js from '@eslint/js'
import { defineConfig } from 'eslint/config'
import tseslint from 'typescript-eslint'

export default defineConfig(
  { ignores: ['dist/', 'node_modules/', '.tap/', '.ci/', 'eslint.config.js'] },
  js.configs.recommended,
  tseslint.configs.recommendedTypeChecked,
  // Plain JavaScript build scripts (scripts/, .ci/) sit outside the TypeScript project: lint
  // them with the syntactic rules only.
  { files: ['**/*.{js,mjs}'], extends: [tseslint.configs.disableTypeChecked], languageOptions: { globals: { process: 'readonly', console: 'readonly', URL: 'readonly' } } },
  {
    files: ['{src,plugins,routes,test,bench}/**/*.ts'],
    languageOptions: {
      parserOptions: {
        projectService: true,
        tsconfigRootDir: import.meta.dirname,
      },
    },
    rules: {
      // Fastify's plugin, hook and handler contract is "async function or callback", and
      // store/service interfaces return promises: an `async` body with nothing to await is
      // how those contracts are met here, and dropping `async` would turn a rejected
      // promise into a synchronous throw.
      '@typescript-eslint/require-await': 'off',
      // The method registry erases each handler's params type as `any` (handler params are
      // contravariant, so no other type holds methods with different schemas in one list), and
      // tests type wire JSON as `any`. Writing `any` is not the hazard; using it unchecked is,
      // and the no-unsafe-* rules still report every such use.
      '@typescript-eslint/no-explicit-any': 'off',
      // Matching control characters is the point of the regexes that have them: stripping ANSI
      // colour escapes from child output, refusing header-unsafe bytes, escaping config values.
      'no-control-regex': 'off',
      // ws hands message data over as a Buffer (binaryType 'nodebuffer', the default, and no
      // socket here changes it); RawData's ArrayBuffer and Buffer[] arms never occur. The first
      // four names are the rule's defaults, kept.
      '@typescript-eslint/no-base-to-string': ['error', { ignoredTypeNames: ['Error', 'RegExp', 'URL', 'URLSearchParams', 'ArrayBuffer', 'Buffer[]'] }],
      // A caught error (typed unknown) is passed along as the rejection reason as it came, so
      // callers can still tell what failed.
      '@typescript-eslint/prefer-promise-reject-errors': ['error', { allowThrowingUnknown: true }],
      // `const { key: _omit, ...rest } = obj` is the idiom for a copy without `key`.
      '@typescript-eslint/no-unused-vars': ['error', { ignoreRestSiblings: true }],
      // TypeBox is loaded through src/util/typebox.ts only, whose build output is one bundled
      // file: a direct import would load the package's ~700 modules, and a second copy of it.
      '@typescript-eslint/no-restricted-imports': ['error', {
        patterns: [{ regex: '^typebox(/|$)', allowTypeImports: true, message: 'import TypeBox from src/util/typebox.ts (bundled at build time)' }],
      }],
    },
  },
  { files: ['src/util/typebox.ts'], rules: { '@typescript-eslint/no-restricted-imports': 'off' } },
  {
    files: ['test/**/*.ts'],
    rules: {
      // tap queues every `t.test(...)` subtest and awaits it itself before the parent ends,
      // so the promise `t.test` returns is tracked even when the caller drops it. Every other
      // promise in a test must still be awaited or handled.
      '@typescript-eslint/no-floating-promises': ['error', {
        allowForKnownSafeCalls: [{ from: 'package', package: '@tapjs/test', name: 'test' }],
      }],
      // Tests read replies and frames as untyped wire JSON and hand each read straight to a tap
      // assertion, which is the check; a cast per read would only hide what is being checked.
      // Assigning, passing or calling such values unchecked is still reported.
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
    },
  },
)
