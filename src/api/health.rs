//! Liveness and readiness probes. `/healthz` answers while the process serves requests;
//! `/readyz` also needs the database to answer, and turns 503 `draining` once a shutdown began.

use bytes::Bytes;

use super::{ApiError, HandlerFuture, HandlerResult, RequestCtx};
use crate::http::Response;

pub fn healthz(_: &RequestCtx<'_>) -> HandlerResult {
    Ok(Response::json(
        200,
        Bytes::from_static(br#"{"status":"ok"}"#),
    ))
}

#[derive(serde::Serialize)]
struct Ready<'a> {
    status: &'a str,
    storage: &'a str,
}

pub fn readyz<'a>(ctx: &'a RequestCtx<'a>) -> HandlerFuture<'a> {
    Box::pin(async move {
        if ctx.shard.shutdown.is_draining() {
            return Err(ApiError::Draining);
        }
        if ctx.app.cluster.as_ref().is_some_and(|c| !c.bus_connected()) {
            return Err(ApiError::ClusterUnavailable);
        }
        ctx.app.storage.ping().await?;
        super::json(
            200,
            &Ready {
                status: "ready",
                storage: ctx.app.storage.engine_name(),
            },
        )
    })
}
