/** Portrait's public API: the typed client, the engine, the contract types and errors. */
export { PortraitClient, type PortraitClientOptions, type ProfileQueryOptions, type PublishResult, type RecommendOptions } from "./client/portrait-client.js";
export { Engine } from "./engine.js";
export type { EngineOptions } from "./config/engine-options.js";
export type { ProfileOptions } from "./actors/profile-options.js";
export type { ProfileView, AffinityView, PredictionsView } from "./actors/user-profile.js";
export type { RecommendView } from "./recs/recommender.js";
export {
  ErrorCode, PortraitError, BadRequestError, UnknownUserError, OverloadedError, ConfigError,
  RegistryMissingError, ModelCorruptError, ModelIncompatibleError, PromotionRefusedError,
} from "./errors.js";
export { ModelRegistry, decidePromotion, type PromotedRecord, type PromotionDecision, type StoredVersion } from "./models/registry.js";
export type { ModelManifest, ModelEvaluation, ModelPromotion } from "./models/artifacts.js";
export { DeadLetterReason } from "./wire/event-validation.js";
export { EventType, EVENT_TYPE_NAMES, pb, type IEvent } from "./wire/proto.js";
export { partitionOf, fnv1a32 } from "./wire/partition.js";
export { subjects, type Subjects } from "./bus/subjects.js";
export { DLQ_HEADERS, ERROR_CODE_HEADER } from "./wire/headers.js";
export { startNatsServer, probeNats, type NatsServerHandle, type NatsServerOptions } from "./bus/nats-server-launcher.js";
