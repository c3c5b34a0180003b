// Names for the generated types (openapi.gen.ts, socket.gen.ts): nothing here is written by hand.
import type { components as Rest } from "./openapi.gen";
import type { components as Socket } from "./socket.gen";

type RestSchemas = Rest["schemas"];
type SocketSchemas = Socket["schemas"];

export type ModelOut = RestSchemas["ModelOut"];
export type SessionOut = RestSchemas["SessionOut"];
export type SessionPage = RestSchemas["SessionPage"];
export type MessagePage = RestSchemas["MessagePage"];
/** A stored message as REST pages list it (the socket's MessageOut fits it too). */
export type MessageRecord = RestSchemas["MessageOut"];
export type KnowledgeBaseOut = RestSchemas["KnowledgeBaseOut"];
export type DocumentOut = RestSchemas["DocumentOut"];
export type DocumentPage = RestSchemas["DocumentPage"];
export type DocumentStatus = RestSchemas["DocumentStatus"];
export type UploadResponse = RestSchemas["UploadResponse"];
export type UploadedImage = RestSchemas["UploadedImage"];

export type ClientMessage = SocketSchemas["ClientMessage"];
export type UserMessage = SocketSchemas["UserMessage"];
export type GenerationOptions = SocketSchemas["GenerationOptions"];
export type ServerEvent = SocketSchemas["ServerEvent"];
export type HistoryEvent = SocketSchemas["HistoryEvent"];
export type MessageOut = SocketSchemas["MessageOut"];
export type Citation = SocketSchemas["Citation"];
export type ImageDescription = SocketSchemas["ImageDescription"];
export type ToolActivity = SocketSchemas["ToolActivity"];
export type Usage = SocketSchemas["Usage"];
export type Timings = SocketSchemas["Timings"];
export type ErrorBody = SocketSchemas["ErrorBody"];
