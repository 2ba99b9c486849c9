//! The `User` aggregate, one per person (id: the lower-cased email): who they are, what
//! they may do, and the API tokens they hold. Being events, these are in the audit trail:
//! who could do what, and since when. Secrets never appear here, only their hashes.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use super::values::Role;

/// A normalised email address: trimmed, lower-cased, with one `@` and something on each side.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, UserError> {
        let email = raw.trim().to_lowercase();
        let valid = email.len() <= 254
            && !email.chars().any(char::is_whitespace)
            && email.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty() && domain.contains('.') && !domain.contains('@')
            });
        if valid {
            Ok(Self(email))
        } else {
            Err(UserError::InvalidEmail(raw.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Email {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Slack member id: `U` (or `W` on Enterprise Grid) and upper-case letters and digits,
/// as Slack shows it in a profile's "Copy member ID".
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SlackUserId(String);

impl SlackUserId {
    pub fn parse(raw: &str) -> Result<Self, UserError> {
        let id = raw.trim();
        let mut chars = id.chars();
        let valid = matches!(chars.next(), Some('U' | 'W'))
            && (3..=32).contains(&id.len())
            && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
        if valid {
            Ok(Self(id.to_string()))
        } else {
            Err(UserError::InvalidSlackUserId(raw.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SlackUserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum UserCommand {
    Add {
        email: Email,
        role: Role,
        /// An argon2 PHC string, never the password.
        password_hash: String,
        by: String,
    },
    GrantRole {
        role: Role,
        by: String,
    },
    SetPassword {
        password_hash: String,
        by: String,
    },
    IssueToken {
        token_id: String,
        /// SHA-256 of the token, hex.
        token_hash: String,
        by: String,
    },
    RevokeToken {
        token_id: String,
        by: String,
    },
    /// Say which Slack member this person is, so their clicks in Slack count as theirs.
    /// Linking again to another member replaces the link.
    LinkSlack {
        slack_user_id: SlackUserId,
        by: String,
    },
    UnlinkSlack {
        by: String,
    },
    /// Stop a person from doing anything: sign-in, sessions, tokens, Slack clicks and email
    /// links are refused from the next request. What they decided before stays decided.
    Disable {
        by: String,
    },
    Enable {
        by: String,
    },
    /// Record that someone not yet a person here was sent a single-use sign-up link.
    Invite {
        role: Role,
        by: String,
        expires_at: chrono::DateTime<chrono::Utc>,
    },
    /// Record that a person was sent a single-use link to set a new password.
    SendPasswordReset {
        by: String,
        expires_at: chrono::DateTime<chrono::Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum UserEvent {
    UserAdded {
        email: Email,
        role: Role,
        password_hash: String,
        by: String,
    },
    RoleGranted {
        role: Role,
        by: String,
    },
    PasswordSet {
        password_hash: String,
        by: String,
    },
    TokenIssued {
        token_id: String,
        token_hash: String,
        by: String,
    },
    TokenRevoked {
        token_id: String,
        by: String,
    },
    /// `by` is who linked it: a person, `cli`, or `slack:verified-email` when Slack vouched
    /// for the member's confirmed email address.
    SlackLinked {
        slack_user_id: SlackUserId,
        by: String,
    },
    SlackUnlinked {
        slack_user_id: SlackUserId,
        by: String,
    },
    /// `by` is who disabled them.
    UserDisabled {
        by: String,
    },
    UserEnabled {
        by: String,
    },
    /// A sign-up link went out; the person is added (`UserAdded`) only when they use it.
    InvitationSent {
        role: Role,
        by: String,
        expires_at: chrono::DateTime<chrono::Utc>,
    },
    PasswordResetSent {
        by: String,
        expires_at: chrono::DateTime<chrono::Utc>,
    },
}

impl DomainEvent for UserEvent {
    fn event_type(&self) -> String {
        match self {
            UserEvent::UserAdded { .. } => "UserAdded",
            UserEvent::RoleGranted { .. } => "RoleGranted",
            UserEvent::PasswordSet { .. } => "PasswordSet",
            UserEvent::TokenIssued { .. } => "TokenIssued",
            UserEvent::TokenRevoked { .. } => "TokenRevoked",
            UserEvent::SlackLinked { .. } => "SlackLinked",
            UserEvent::SlackUnlinked { .. } => "SlackUnlinked",
            UserEvent::UserDisabled { .. } => "UserDisabled",
            UserEvent::UserEnabled { .. } => "UserEnabled",
            UserEvent::InvitationSent { .. } => "InvitationSent",
            UserEvent::PasswordResetSent { .. } => "PasswordResetSent",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

/// The accounts a person is known by outside ExecOps, as people link them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkedAccounts {
    /// Their Slack member id, `U…`.
    pub slack_user_id: Option<String>,
    /// Their GitHub login.
    pub github_login: Option<String>,
}

/// Every name `email` goes by in the signals that can request a proposal, in the form the
/// router records as `requested_by` (`slack:U…`, `github:login`), for the self-approval
/// check. A new kind of link adds one line here.
pub fn identities_of(email: &Email, links: &LinkedAccounts) -> Vec<String> {
    let mut names = vec![email.as_str().to_string()];
    names.extend(links.slack_user_id.iter().map(|id| format!("slack:{id}")));
    names.extend(
        links
            .github_login
            .iter()
            .map(|login| format!("github:{login}")),
    );
    names
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("{0:?} is not an email address")]
    InvalidEmail(String),
    #[error("this person already exists")]
    AlreadyExists,
    #[error("no such person")]
    NoSuchUser,
    #[error("the person already has the role {0}")]
    SameRole(Role),
    #[error("token {0} already exists")]
    TokenExists(String),
    #[error("no live token {0}")]
    NoSuchToken(String),
    #[error("{0:?} is not a Slack member id (U or W followed by capital letters and digits)")]
    InvalidSlackUserId(String),
    #[error("this person is already linked to Slack member {0}")]
    AlreadyLinked(SlackUserId),
    #[error("this person is not linked to a Slack member")]
    NotLinked,
    #[error("this person is already disabled")]
    AlreadyDisabled,
    #[error("this person is not disabled")]
    NotDisabled,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct User {
    exists: bool,
    role: Option<Role>,
    live_tokens: Vec<String>,
    revoked_tokens: Vec<String>,
    #[serde(default)]
    slack_user_id: Option<SlackUserId>,
    #[serde(default)]
    disabled: bool,
}

impl Aggregate for User {
    const TYPE: &'static str = "User";
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = UserError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        if !self.exists
            && !matches!(
                command,
                UserCommand::Add { .. } | UserCommand::Invite { .. }
            )
        {
            return Err(UserError::NoSuchUser);
        }
        let event = match command {
            UserCommand::Add {
                email,
                role,
                password_hash,
                by,
            } => {
                if self.exists {
                    return Err(UserError::AlreadyExists);
                }
                UserEvent::UserAdded {
                    email,
                    role,
                    password_hash,
                    by,
                }
            }
            UserCommand::GrantRole { role, by } => {
                if self.role == Some(role) {
                    return Err(UserError::SameRole(role));
                }
                UserEvent::RoleGranted { role, by }
            }
            UserCommand::SetPassword { password_hash, by } => {
                UserEvent::PasswordSet { password_hash, by }
            }
            UserCommand::IssueToken {
                token_id,
                token_hash,
                by,
            } => {
                if self.live_tokens.contains(&token_id) || self.revoked_tokens.contains(&token_id) {
                    return Err(UserError::TokenExists(token_id));
                }
                UserEvent::TokenIssued {
                    token_id,
                    token_hash,
                    by,
                }
            }
            UserCommand::RevokeToken { token_id, by } => {
                if !self.live_tokens.contains(&token_id) {
                    return Err(UserError::NoSuchToken(token_id));
                }
                UserEvent::TokenRevoked { token_id, by }
            }
            UserCommand::LinkSlack { slack_user_id, by } => {
                if self.slack_user_id.as_ref() == Some(&slack_user_id) {
                    return Err(UserError::AlreadyLinked(slack_user_id));
                }
                UserEvent::SlackLinked { slack_user_id, by }
            }
            UserCommand::UnlinkSlack { by } => {
                let slack_user_id = self.slack_user_id.clone().ok_or(UserError::NotLinked)?;
                UserEvent::SlackUnlinked { slack_user_id, by }
            }
            UserCommand::Disable { by } => {
                if self.disabled {
                    return Err(UserError::AlreadyDisabled);
                }
                UserEvent::UserDisabled { by }
            }
            UserCommand::Enable { by } => {
                if !self.disabled {
                    return Err(UserError::NotDisabled);
                }
                UserEvent::UserEnabled { by }
            }
            UserCommand::Invite {
                role,
                by,
                expires_at,
            } => {
                if self.exists {
                    return Err(UserError::AlreadyExists);
                }
                UserEvent::InvitationSent {
                    role,
                    by,
                    expires_at,
                }
            }
            UserCommand::SendPasswordReset { by, expires_at } => {
                if self.disabled {
                    return Err(UserError::AlreadyDisabled);
                }
                UserEvent::PasswordResetSent { by, expires_at }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            UserEvent::UserAdded { role, .. } => {
                self.exists = true;
                self.role = Some(role);
            }
            UserEvent::RoleGranted { role, .. } => self.role = Some(role),
            UserEvent::PasswordSet { .. } => {}
            UserEvent::TokenIssued { token_id, .. } => self.live_tokens.push(token_id),
            UserEvent::TokenRevoked { token_id, .. } => {
                self.live_tokens.retain(|t| *t != token_id);
                self.revoked_tokens.push(token_id);
            }
            UserEvent::SlackLinked { slack_user_id, .. } => {
                self.slack_user_id = Some(slack_user_id);
            }
            UserEvent::SlackUnlinked { .. } => self.slack_user_id = None,
            UserEvent::UserDisabled { .. } => self.disabled = true,
            UserEvent::UserEnabled { .. } => self.disabled = false,
            UserEvent::InvitationSent { .. } | UserEvent::PasswordResetSent { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_person_goes_by_their_email_and_each_linked_account() {
        let email = Email::parse("Ada@Example.com").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            identities_of(&email, &LinkedAccounts::default()),
            ["ada@example.com"]
        );
        let links = LinkedAccounts {
            slack_user_id: Some("U123".into()),
            github_login: Some("ada".into()),
        };
        assert_eq!(
            identities_of(&email, &links),
            ["ada@example.com", "slack:U123", "github:ada"]
        );
    }
    use cqrs_es::test::TestFramework;

    fn email() -> Email {
        Email::parse(" Founder@Example.com ").unwrap_or_else(|e| panic!("{e}"))
    }

    fn added() -> UserEvent {
        UserEvent::UserAdded {
            email: email(),
            role: Role::Approver,
            password_hash: "$argon2id$…".into(),
            by: "cli".into(),
        }
    }

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(email().as_str(), "founder@example.com");
        for bad in [
            "",
            "founder",
            "@example.com",
            "a@b",
            "a b@example.com",
            "a@@example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_person_is_added_once() {
        TestFramework::<User>::with(())
            .given(vec![added()])
            .when(UserCommand::Add {
                email: email(),
                role: Role::Admin,
                password_hash: "x".into(),
                by: "cli".into(),
            })
            .then_expect_error(UserError::AlreadyExists);
    }

    #[test]
    fn an_invitation_is_for_someone_not_yet_here_and_a_reset_for_someone_who_may_sign_in() {
        let expires_at = chrono::DateTime::from_timestamp(1_800_000_000, 0).expect("a time");
        let invite = UserCommand::Invite {
            role: Role::Viewer,
            by: "boss@example.com".into(),
            expires_at,
        };
        let sent = UserEvent::InvitationSent {
            role: Role::Viewer,
            by: "boss@example.com".into(),
            expires_at,
        };
        TestFramework::<User>::with(())
            .given_no_previous_events()
            .when(invite.clone())
            .then_expect_events(vec![sent.clone()]);
        TestFramework::<User>::with(())
            .given(vec![sent])
            .when(UserCommand::Add {
                email: email(),
                role: Role::Viewer,
                password_hash: "x".into(),
                by: "boss@example.com".into(),
            })
            .then_expect_events(vec![UserEvent::UserAdded {
                email: email(),
                role: Role::Viewer,
                password_hash: "x".into(),
                by: "boss@example.com".into(),
            }]);
        TestFramework::<User>::with(())
            .given(vec![added()])
            .when(invite)
            .then_expect_error(UserError::AlreadyExists);
        let reset = UserCommand::SendPasswordReset {
            by: "boss@example.com".into(),
            expires_at,
        };
        TestFramework::<User>::with(())
            .given_no_previous_events()
            .when(reset.clone())
            .then_expect_error(UserError::NoSuchUser);
        TestFramework::<User>::with(())
            .given(vec![added(), UserEvent::UserDisabled { by: "cli".into() }])
            .when(reset)
            .then_expect_error(UserError::AlreadyDisabled);
    }

    #[test]
    fn nothing_happens_to_someone_who_does_not_exist() {
        TestFramework::<User>::with(())
            .given_no_previous_events()
            .when(UserCommand::GrantRole {
                role: Role::Admin,
                by: "cli".into(),
            })
            .then_expect_error(UserError::NoSuchUser);
    }

    #[test]
    fn a_token_is_revoked_once_and_its_id_never_reused() {
        let issued = UserEvent::TokenIssued {
            token_id: "t1".into(),
            token_hash: "h".into(),
            by: "cli".into(),
        };
        let revoked = UserEvent::TokenRevoked {
            token_id: "t1".into(),
            by: "cli".into(),
        };
        TestFramework::<User>::with(())
            .given(vec![added(), issued.clone()])
            .when(UserCommand::RevokeToken {
                token_id: "t1".into(),
                by: "cli".into(),
            })
            .then_expect_events(vec![revoked.clone()]);
        TestFramework::<User>::with(())
            .given(vec![added(), issued, revoked])
            .when(UserCommand::IssueToken {
                token_id: "t1".into(),
                token_hash: "h2".into(),
                by: "cli".into(),
            })
            .then_expect_error(UserError::TokenExists("t1".into()));
    }

    fn member(raw: &str) -> SlackUserId {
        SlackUserId::parse(raw).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn slack_member_ids_are_checked() {
        assert_eq!(member(" U012AB3CD ").as_str(), "U012AB3CD");
        assert_eq!(member("W0123ABC").as_str(), "W0123ABC");
        for bad in [
            "",
            "U",
            "U1",
            "u012ab3cd",
            "C012AB3CD",
            "U012 AB3",
            "U012-AB3",
            "@ada",
        ] {
            assert_eq!(
                SlackUserId::parse(bad),
                Err(UserError::InvalidSlackUserId(bad.to_string())),
                "{bad:?}"
            );
        }
        assert!(SlackUserId::parse(&format!("U{}", "A".repeat(40))).is_err());
    }

    #[test]
    fn a_person_is_linked_to_a_slack_member_and_relinked_to_another() {
        let linked = UserEvent::SlackLinked {
            slack_user_id: member("U1AAA"),
            by: "cli".into(),
        };
        TestFramework::<User>::with(())
            .given(vec![added()])
            .when(UserCommand::LinkSlack {
                slack_user_id: member("U1AAA"),
                by: "cli".into(),
            })
            .then_expect_events(vec![linked.clone()]);
        TestFramework::<User>::with(())
            .given(vec![added(), linked.clone()])
            .when(UserCommand::LinkSlack {
                slack_user_id: member("U1AAA"),
                by: "cli".into(),
            })
            .then_expect_error(UserError::AlreadyLinked(member("U1AAA")));
        TestFramework::<User>::with(())
            .given(vec![added(), linked])
            .when(UserCommand::LinkSlack {
                slack_user_id: member("U2BBB"),
                by: "slack:verified-email".into(),
            })
            .then_expect_events(vec![UserEvent::SlackLinked {
                slack_user_id: member("U2BBB"),
                by: "slack:verified-email".into(),
            }]);
    }

    #[test]
    fn only_a_linked_person_is_unlinked_and_nobody_unknown_is_linked() {
        TestFramework::<User>::with(())
            .given(vec![added()])
            .when(UserCommand::UnlinkSlack { by: "cli".into() })
            .then_expect_error(UserError::NotLinked);
        TestFramework::<User>::with(())
            .given(vec![
                added(),
                UserEvent::SlackLinked {
                    slack_user_id: member("U1AAA"),
                    by: "cli".into(),
                },
            ])
            .when(UserCommand::UnlinkSlack { by: "cli".into() })
            .then_expect_events(vec![UserEvent::SlackUnlinked {
                slack_user_id: member("U1AAA"),
                by: "cli".into(),
            }]);
        TestFramework::<User>::with(())
            .given_no_previous_events()
            .when(UserCommand::LinkSlack {
                slack_user_id: member("U1AAA"),
                by: "cli".into(),
            })
            .then_expect_error(UserError::NoSuchUser);
    }
}
