/** TypeBox shorthands for the wire's `T | null` fields, which codex's schemas use everywhere. */
import { Type, type TSchema } from './typebox.js'

/** Present, and either `T` or `null`. */
export const Nullable = <T extends TSchema>(schema: T) => Type.Union([schema, Type.Null()])

/** Absent, `null` or `T`: codex's `Option<T>` fields, which it may omit or send as null. */
export const OptionalNullable = <T extends TSchema>(schema: T) => Type.Optional(Nullable(schema))
