/**
 * The TF.js backends, best first (tf.ts picks one), without loading TF.js:
 * the CLI lists them in its options, and a command that trains loads TF.js
 * only when it runs.
 */
export const TF_BACKENDS = ["tensorflow", "wasm", "cpu"] as const;
export type TfBackendName = (typeof TF_BACKENDS)[number];
