/**
 * TypeBox as the rest of the code uses it: `Type` declares a schema, `Compile` turns one into a
 * validator. Every import of TypeBox goes through this module (the linter refuses any other).
 *
 * Why a module of its own: TypeBox 1.x ships as ~700 small ES modules, and loading them was
 * ~0.6 s of CPU at every process start (the server, each CLI command) and ~1.7 s in every test
 * process under tap's loader hooks. `npm run build` replaces this module's compiled output with
 * one bundled file (`scripts/bundle-typebox.js`), which loads in ~0.1 s. One import path also
 * means one copy at run time: TypeBox keeps its format and settings registries per copy.
 */
export { Type } from 'typebox'
export type { Static, TSchema } from 'typebox'
export { Compile } from 'typebox/compile'
export type { Validator } from 'typebox/compile'
