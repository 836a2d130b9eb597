//! The event streams (server-sent events): one session's changes for whoever may see it, and
//! every change for admins. The caller is checked by the route table before a stream starts.

use crate::api::{ApiResult, E, name_param, session_id};
use crate::auth::Caller;
use crate::engine::{Change, Engine};
use axum::Extension;
use axum::extract::{Path, RawQuery, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use pxs_protocol::api;
use pxs_protocol::node::SessionId;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// How often an event stream re-reads its session even without a local change (another
/// coordinator may have changed it).
const POLL: Duration = Duration::from_secs(2);

pub(crate) async fn session_events(
    State(engine): E,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let id = session_id(&id)?;
    let name = name_param(query.as_deref())?;
    // Checks access (and existence) before the stream starts.
    let first = engine.session(&caller, &id, name.as_deref()).await?;
    let rx = engine.subscribe();
    let stream = session_stream(engine, caller, name, id, first, rx);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

struct Watch {
    engine: Arc<Engine>,
    caller: Caller,
    /// The name its join URLs carry (`?name=`).
    name: Option<String>,
    id: SessionId,
    rx: broadcast::Receiver<Change>,
    /// The last view sent, without its join URL (which changes at each read).
    last: Option<api::Session>,
    pending: Option<api::Session>,
    done: bool,
}

fn comparable(s: &api::Session) -> api::Session {
    api::Session {
        join_url: s.join_url.as_ref().map(|_| String::new()),
        ..s.clone()
    }
}

fn session_event(s: &api::Session) -> Event {
    Event::default()
        .event(api::event_names::SESSION)
        .json_data(s)
        .unwrap_or_else(|_| Event::default().comment("unserializable"))
}

fn session_stream(
    engine: Arc<Engine>,
    caller: Caller,
    name: Option<String>,
    id: SessionId,
    first: api::Session,
    rx: broadcast::Receiver<Change>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let w = Watch {
        engine,
        caller,
        name,
        id,
        rx,
        last: None,
        pending: Some(first),
        done: false,
    };
    futures_util::stream::unfold(w, |mut w| async move {
        loop {
            if let Some(s) = w.pending.take() {
                let c = comparable(&s);
                if w.last.as_ref() != Some(&c) {
                    w.done = s.state.is_final();
                    w.last = Some(c);
                    return Some((Ok(session_event(&s)), w));
                }
            }
            if w.done {
                return None; // the session is over: the stream ends after saying so
            }
            let reread = tokio::select! {
                r = w.rx.recv() => match r {
                    Ok(Change::Session(id)) => id == w.id,
                    Ok(Change::Node(_)) => false,
                    Err(broadcast::error::RecvError::Lagged(_)) => true,
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = tokio::time::sleep(POLL) => true,
            };
            if reread {
                // A stream opened with a share link ends when the link is revoked or expires.
                if !w.engine.key_still_valid(&w.caller).await.unwrap_or(true) {
                    return None;
                }
                match w.engine.session(&w.caller, &w.id, w.name.as_deref()).await {
                    Ok(s) => w.pending = Some(s),
                    Err(_) => return None,
                }
            }
        }
    })
}

pub(crate) async fn all_events(State(engine): E) -> ApiResult<Response> {
    let rx = engine.subscribe();
    let stream = futures_util::stream::unfold((engine, rx), |(engine, mut rx)| async move {
        loop {
            let change = match rx.recv().await {
                Ok(c) => c,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    let e = Event::default().comment(format!("{n} changes skipped"));
                    return Some((Ok::<_, Infallible>(e), (engine, rx)));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            let admin = Caller::internal_admin();
            let event = match change {
                Change::Session(id) => match engine.session(&admin, &id, None).await {
                    Ok(s) => session_event(&s),
                    Err(_) => continue,
                },
                Change::Node(id) => match engine.node(&id).await {
                    Ok(n) => Event::default()
                        .event(api::event_names::NODE)
                        .json_data(&n)
                        .unwrap_or_else(|_| Event::default().comment("unserializable")),
                    Err(_) => continue,
                },
            };
            return Some((Ok(event), (engine, rx)));
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}
