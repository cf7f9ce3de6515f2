/** The package version, reported by the CLI, the service framework and logs. */
export const VERSION = "0.1.0";
