/** A real 3-node nats-server cluster for the cluster tests (bench/harness/nats-cluster.ts), with the tests' clear message when the binary is missing. */
import { startNatsCluster, type NatsCluster } from "../../bench/harness/nats-cluster.js";
import { startTestNats } from "./nats.js";

export type TestNatsCluster = NatsCluster;

export function startTestNatsCluster(size = 3): Promise<TestNatsCluster> {
  return startNatsCluster(size, (extraConfig) => startTestNats(extraConfig));
}
