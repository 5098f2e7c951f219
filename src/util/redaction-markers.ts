/**
 * What stands where a secret was removed. Two markers with two meanings, so a reader can tell
 * which rule removed a value.
 */

/** This project's marker in free text (log lines, error messages, URLs): a secret was here. */
export const REDACTED = '[redacted]'

/**
 * Codex's replacement for a sensitive field's value in a remote control error body; kept as
 * codex writes it so the project's remote control messages read like codex's.
 */
export const REDACTED_FIELD_VALUE = '<redacted>'
