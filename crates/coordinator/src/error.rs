//! The one error type at the HTTP edge: its kind fixes the status code; the internal cause is
//! logged, never returned.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use pxs_protocol::api::{ErrorBody, ErrorDetail};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    PayloadTooLarge,
    UnsupportedMediaType,
    TooManyRequests,
    Unavailable,
    Internal,
}

impl Kind {
    pub fn status(self) -> StatusCode {
        match self {
            Kind::BadRequest => StatusCode::BAD_REQUEST,
            Kind::Unauthorized => StatusCode::UNAUTHORIZED,
            Kind::Forbidden => StatusCode::FORBIDDEN,
            Kind::NotFound => StatusCode::NOT_FOUND,
            Kind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Kind::Conflict => StatusCode::CONFLICT,
            Kind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Kind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Kind::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `code` of the error body: the listener's table (`pxs_net::error_code`), so the errors
    /// the listener answers itself (414, 431, 503 over the cap) and the API's agree.
    pub fn code(self) -> &'static str {
        pxs_net::error_code(self.status())
    }
}

#[derive(Debug)]
pub struct ApiError {
    pub kind: Kind,
    pub message: String,
}

impl ApiError {
    pub fn new(kind: Kind, message: impl Into<String>) -> ApiError {
        ApiError {
            kind,
            message: message.into(),
        }
    }

    pub fn bad_request(m: impl Into<String>) -> ApiError {
        ApiError::new(Kind::BadRequest, m)
    }

    pub fn not_found(m: impl Into<String>) -> ApiError {
        ApiError::new(Kind::NotFound, m)
    }

    pub fn conflict(m: impl Into<String>) -> ApiError {
        ApiError::new(Kind::Conflict, m)
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            Kind::Unauthorized,
            "a valid token is required (Authorization: Bearer <token>)",
        )
    }

    pub fn forbidden() -> ApiError {
        ApiError::new(Kind::Forbidden, "this needs an admin token")
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> ApiError {
        if let crate::store::StoreError::Busy = e {
            tracing::warn!("database busy past limits.database_wait: answered 503");
            return ApiError::new(
                Kind::Unavailable,
                "the coordinator is busy; try again in a moment",
            );
        }
        tracing::error!(error = %e, "database error");
        ApiError::new(
            Kind::Unavailable,
            "the database is not available; try again",
        )
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> ApiError {
        crate::store::StoreError::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.kind.code().to_owned(),
                message: self.message,
            },
        };
        let mut response = (self.kind.status(), axum::Json(body)).into_response();
        if self.kind == Kind::Unavailable {
            // Busy or the database away: worth another try, after a pause.
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}
