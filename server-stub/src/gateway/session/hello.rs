//! Sign-in: the `hello` (protocol version, token, client id and its
//! owner) and telling the client whether the server can reach Redis.

use thoonk_protocol::{ErrorCode, ServerMessage, PROTOCOL_VERSION};

use super::{Session, SessionEnd};

impl Session {
    pub(super) async fn on_hello(
        &mut self,
        protocol: u32,
        token: &str,
        client_id: String,
    ) -> Result<(), SessionEnd> {
        check_protocol(protocol)?;
        let Some(user) = self.shared.access.authenticate(token) else {
            return Err(SessionEnd::Refused {
                code: ErrorCode::Unauthorized,
                message: "the token is not valid: sign in again".into(),
            });
        };
        check_client_id(&client_id)?;
        match self.shared.owners.claim(&client_id, &user.name).await {
            Ok(Some(claim)) => self._claim = Some(claim),
            Ok(None) => {
                return Err(SessionEnd::Refused {
                    code: ErrorCode::Forbidden,
                    message: "this client id belongs to another user: use a client id of your own"
                        .into(),
                })
            }
            Err(err) => {
                tracing::error!(%err, "cannot check the client id's owner");
                return Err(SessionEnd::Refused {
                    code: ErrorCode::Internal,
                    message: "the server failed; retry later".into(),
                });
            }
        }
        self.shared
            .hub
            .follow_client(self.membership.id, &client_id);
        self.client_id = client_id;
        // Signed in: no longer counts against the address's cap.
        self.slot = None;
        let welcome = ServerMessage::Welcome {
            protocol: PROTOCOL_VERSION,
            user: user.name.clone(),
            ledger_window_ms: Some(
                u64::try_from(self.shared.owners.retention().as_millis()).unwrap_or(u64::MAX),
            ),
        };
        self.user = Some(user);
        self.send(&welcome).await?;
        self.tell_server_state().await
    }

    /// Tells the client the hub's view of Redis when it differs from what
    /// the client was told last.
    pub(super) async fn tell_server_state(&mut self) -> Result<(), SessionEnd> {
        let state = self.shared.hub.server_state();
        if state == self.told {
            return Ok(());
        }
        self.told = state;
        self.send(&ServerMessage::Server { state }).await
    }
}

/// Refuses a `hello` of another protocol version.
pub(super) fn check_protocol(protocol: u32) -> Result<(), SessionEnd> {
    if protocol == PROTOCOL_VERSION {
        return Ok(());
    }
    Err(SessionEnd::Refused {
        code: ErrorCode::UnsupportedVersion,
        message: format!(
            "this server speaks protocol {PROTOCOL_VERSION}, the client {protocol}: update the client"
        ),
    })
}

/// Refuses a client id that change ids could not be told apart by: empty,
/// over 128 bytes, or holding `:` or NUL.
pub(super) fn check_client_id(client_id: &str) -> Result<(), SessionEnd> {
    if client_id.is_empty() || client_id.len() > 128 || client_id.contains([':', '\0']) {
        return Err(SessionEnd::Refused {
            code: ErrorCode::BadRequest,
            message: "client_id must be 1-128 bytes without `:` or NUL".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused_code(result: Result<(), SessionEnd>) -> Option<ErrorCode> {
        match result {
            Err(SessionEnd::Refused { code, .. }) => Some(code),
            _ => None,
        }
    }

    #[test]
    fn only_this_protocol_version_is_accepted() {
        assert!(check_protocol(PROTOCOL_VERSION).is_ok());
        assert_eq!(
            refused_code(check_protocol(PROTOCOL_VERSION + 1)),
            Some(ErrorCode::UnsupportedVersion)
        );
    }

    #[test]
    fn client_ids_are_1_to_128_bytes_without_colon_or_nul() {
        assert!(check_client_id("tab-1").is_ok());
        assert!(check_client_id(&"x".repeat(128)).is_ok());
        for bad in ["", "a:b", "a\0b", &"x".repeat(129)] {
            assert_eq!(
                refused_code(check_client_id(bad)),
                Some(ErrorCode::BadRequest),
                "{bad:?}"
            );
        }
    }
}
