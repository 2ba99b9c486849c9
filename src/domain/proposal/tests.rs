use super::*;
use crate::domain::ApprovalTerms;
use cqrs_es::test::TestFramework;
use serde_json::json;

type Framework = TestFramework<Proposal>;

fn id() -> ProposalId {
    ProposalId::derive("stripe:evt_1", "money.card_update_email")
}

fn draft() -> ProposalDraft {
    ProposalDraft {
        id: id(),
        title: "Email the customer a card-update link".into(),
        vertical: Vertical::Money,
        action_type: "email.send".into(),
        action: json!({"to": "jenny@example.com", "subject": "Your card was declined"}),
        reasoning: "The invoice payment failed twice.".into(),
        drivers: vec!["because $10.00 is at risk".into()],
        score: 72,
        urgency: Urgency::High,
        due_by: None,
        owner: Some("founder@example.com".into()),
        inbound_ids: vec!["stripe:evt_1".into()],
        subject_key: "stripe:invoice:in_1".into(),
        requested_by: Some("requester@example.com".into()),
        outcome_key: Some("stripe:invoice:in_1:paid".into()),
        terms: Default::default(),
    }
}

fn hash() -> String {
    payload_hash(&draft().action)
}

fn decision(actor: &str, role: Role) -> Decision {
    Decision {
        actor: actor.into(),
        role,
        comment: Some("go".into()),
        payload_hash: hash(),
        identities: vec![],
        at: Some(at()),
    }
}

fn approver() -> Decision {
    decision("approver@example.com", Role::Approver)
}

fn drafted() -> ProposalEvent {
    ProposalEvent::Drafted {
        draft: draft(),
        payload_hash: hash(),
    }
}

fn approved() -> ProposalEvent {
    ProposalEvent::Approved(approver())
}

fn started(attempt: u32) -> ProposalEvent {
    ProposalEvent::ExecutionStarted {
        attempt,
        idempotency_key: id().idempotency_key(),
    }
}

fn at() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default()
}

fn succeeded() -> ProposalEvent {
    ProposalEvent::ExecutionSucceeded {
        attempt: 1,
        result: json!({"ok": true}),
        at: Some(at()),
    }
}

fn failed(retryable: bool) -> ProposalEvent {
    ProposalEvent::ExecutionFailed {
        attempt: 1,
        error: "smtp said 451".into(),
        retryable,
    }
}

// ---- The whole transition table: every command against every state. ----

/// The commands, in the column order of the table below.
fn commands() -> Vec<ProposalCommand> {
    use ProposalCommand as C;
    vec![
        C::Draft(draft()),
        C::Approve(approver()),
        C::Reject {
            decision: approver(),
            reason: "not now".into(),
        },
        C::Expire {
            at: DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default(),
        },
        C::Supersede {
            by: None,
            reason: "a newer signal".into(),
        },
        C::StartExecution,
        C::RecordSuccess {
            attempt: 1,
            result: json!({}),
            at: at(),
        },
        C::RecordFailure {
            attempt: 1,
            error: "boom".into(),
            retryable: true,
        },
        C::RecordUncertain {
            attempt: 1,
            reason: "process died".into(),
        },
        C::RequestRollback {
            actor: "approver@example.com".into(),
            role: Role::Approver,
            reason: "wrong channel".into(),
            at: at(),
            window: chrono::Duration::hours(1),
        },
        C::RecordOutcome {
            kind: "recovered".into(),
            summary: "recovered $10.00".into(),
            value_cents: Some(1000),
        },
        C::Suppress {
            draft: draft(),
            reason: "email.send is disabled".into(),
        },
        C::Revise(revision("stripe:evt_2")),
        C::Preview {
            actor: "approver@example.com".into(),
            requests: json!([]),
        },
        C::Defer {
            reason: "rate limited".into(),
            until: None,
        },
        C::MarkDone {
            actor: "approver@example.com".into(),
            role: Role::Approver,
            note: None,
        },
        C::RequestRetry {
            actor: "approver@example.com".into(),
            role: Role::Approver,
        },
        C::Escalate { at: at() },
    ]
}

/// The four execution-time commands (preview, defer, mark done, retry) in a state, and an
/// escalation (the draft of the table has no ladder).
fn late(s: Status) -> Vec<Expect> {
    use ProposalError as X;
    use Status as S;
    let preview = if s == S::NotDrafted {
        Err(X::NotDrafted)
    } else {
        Ok("Previewed")
    };
    let defer = match s {
        S::Approved => Ok("ExecutionDeferred"),
        S::NotDrafted | S::Suppressed | S::Pending | S::Rejected | S::Expired | S::Superseded => {
            Err(X::NotApproved(s))
        }
        other => Err(X::CannotExecute(other)),
    };
    let mark_done = if s == S::Uncertain {
        Ok("MarkedDone")
    } else {
        Err(X::NotUncertain(s))
    };
    let retry = if matches!(s, S::Uncertain | S::Failed) {
        Ok("RetryRequested")
    } else {
        Err(X::CannotRetry(s))
    };
    let escalate = match s {
        S::NotDrafted => Err(X::NotDrafted),
        S::Pending => Err(X::NoFurtherEscalation),
        other => Err(X::NotPending(other)),
    };
    vec![preview, defer, mark_done, retry, escalate]
}

fn revision(inbound_id: &str) -> Revision {
    Revision {
        title: "Email the customer a card-update link".into(),
        action: json!({"to": "jenny@example.com", "subject": "Second reminder"}),
        reasoning: "The invoice payment failed three times.".into(),
        drivers: vec![],
        score: 80,
        urgency: Urgency::High,
        due_by: None,
        inbound_id: inbound_id.into(),
        terms: None,
    }
}

/// What each command must produce: the event type it records, or the error it is refused with.
type Expect = Result<&'static str, ProposalError>;

fn states() -> Vec<(&'static str, Vec<ProposalEvent>)> {
    let executing = vec![drafted(), approved(), started(1)];
    let with = |extra: Vec<ProposalEvent>| {
        let mut events = executing.clone();
        events.extend(extra);
        events
    };
    vec![
        ("not drafted", vec![]),
        (
            "suppressed",
            vec![ProposalEvent::DraftSuppressed {
                draft: draft(),
                payload_hash: hash(),
                reason: "disabled".into(),
            }],
        ),
        ("pending", vec![drafted()]),
        ("approved", vec![drafted(), approved()]),
        (
            "rejected",
            vec![
                drafted(),
                ProposalEvent::Rejected {
                    decision: approver(),
                    reason: "no".into(),
                },
            ],
        ),
        (
            "expired",
            vec![
                drafted(),
                ProposalEvent::Expired {
                    at: DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default(),
                },
            ],
        ),
        (
            "superseded",
            vec![
                drafted(),
                ProposalEvent::Superseded {
                    by: None,
                    reason: "newer".into(),
                },
            ],
        ),
        ("executing", executing.clone()),
        ("succeeded", with(vec![succeeded()])),
        ("failed, retryable", with(vec![failed(true)])),
        ("failed, final", with(vec![failed(false)])),
        (
            "uncertain",
            with(vec![ProposalEvent::ExecutionUncertain {
                attempt: 1,
                reason: "died".into(),
            }]),
        ),
        (
            "rolled back",
            with(vec![
                succeeded(),
                ProposalEvent::RolledBack {
                    actor: "approver@example.com".into(),
                    role: Role::Approver,
                    result: json!({}),
                },
            ]),
        ),
    ]
}

fn table() -> Vec<Vec<Expect>> {
    use ProposalError as X;
    use Status as S;
    let nsa = || Err(X::NoSuchAttempt(1));
    let closed = |s: Status, start: Expect| -> Vec<Expect> {
        vec![
            Err(X::AlreadyDrafted),
            Err(X::NotPending(s)),
            Err(X::NotPending(s)),
            Err(X::NotPending(s)),
            Err(X::NotPending(s)),
            start,
            nsa(),
            nsa(),
            nsa(),
            Err(X::CannotRollBack(s)),
            Err(X::NotExecuted(s)),
            Err(X::AlreadyDrafted),
            Err(X::NotPending(s)),
        ]
    };
    let after_execution = |s: Status, start: Expect| -> Vec<Expect> {
        let mut row = closed(s, start);
        row[10] = Ok("OutcomeRecorded");
        row
    };
    let rows = vec![
        vec![
            Ok("Drafted"),
            Err(X::NotDrafted),
            Err(X::NotDrafted),
            Err(X::NotDrafted),
            Err(X::NotDrafted),
            Err(X::NotApproved(S::NotDrafted)),
            nsa(),
            nsa(),
            nsa(),
            Err(X::CannotRollBack(S::NotDrafted)),
            Err(X::NotExecuted(S::NotDrafted)),
            Ok("DraftSuppressed"),
            Err(X::NotDrafted),
        ],
        closed(S::Suppressed, Err(X::NotApproved(S::Suppressed))),
        vec![
            Err(X::AlreadyDrafted),
            Ok("Approved"),
            Ok("Rejected"),
            Ok("Expired"),
            Ok("Superseded"),
            Err(X::NotApproved(S::Pending)),
            nsa(),
            nsa(),
            nsa(),
            Err(X::CannotRollBack(S::Pending)),
            Err(X::NotExecuted(S::Pending)),
            Err(X::AlreadyDrafted),
            Ok("Revised"),
        ],
        closed(S::Approved, Ok("ExecutionStarted")),
        closed(S::Rejected, Err(X::NotApproved(S::Rejected))),
        closed(S::Expired, Err(X::NotApproved(S::Expired))),
        closed(S::Superseded, Err(X::NotApproved(S::Superseded))),
        {
            let mut row = closed(S::Executing, Err(X::CannotExecute(S::Executing)));
            row[6] = Ok("ExecutionSucceeded");
            row[7] = Ok("ExecutionFailed");
            row[8] = Ok("ExecutionUncertain");
            row
        },
        {
            let mut row = after_execution(S::Succeeded, Err(X::CannotExecute(S::Succeeded)));
            row[9] = Ok("RollbackRequested");
            row
        },
        after_execution(S::Failed, Ok("ExecutionStarted")),
        after_execution(S::Failed, Err(X::CannotExecute(S::Failed))),
        after_execution(S::Uncertain, Err(X::CannotExecute(S::Uncertain))),
        after_execution(S::RolledBack, Err(X::CannotExecute(S::RolledBack))),
    ];
    let statuses = [
        S::NotDrafted,
        S::Suppressed,
        S::Pending,
        S::Approved,
        S::Rejected,
        S::Expired,
        S::Superseded,
        S::Executing,
        S::Succeeded,
        S::Failed,
        S::Failed,
        S::Uncertain,
        S::RolledBack,
    ];
    let mut rows: Vec<Vec<Expect>> = rows
        .into_iter()
        .zip(statuses)
        .map(|(mut row, s)| {
            row.extend(late(s));
            row
        })
        .collect();
    // A retryable failure may be deferred like an approval.
    rows[9][14] = Ok("ExecutionDeferred");
    rows
}

#[test]
fn every_command_in_every_state_is_allowed_or_refused_as_the_table_says() {
    let states = states();
    let table = table();
    assert_eq!(states.len(), table.len());
    let mut checked = 0;
    for ((state, history), row) in states.into_iter().zip(table) {
        let commands = commands();
        assert_eq!(commands.len(), row.len(), "row for {state}");
        for (command, expected) in commands.into_iter().zip(row) {
            let label = format!("{command:?} when {state}");
            let got = Framework::with(())
                .given(history.clone())
                .when(command)
                .inspect_result();
            match (got, expected) {
                (Ok(events), Ok(event_type)) => {
                    assert_eq!(events.len(), 1, "{label}");
                    assert_eq!(events[0].event_type(), event_type, "{label}");
                }
                (Err(error), Err(expected)) => assert_eq!(error, expected, "{label}"),
                (got, expected) => panic!("{label}: got {got:?}, expected {expected:?}"),
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 13 * 18);
}

// ---- The rules the product promises, one by one. ----

#[test]
fn a_draft_records_the_hash_of_its_action() {
    Framework::with(())
        .given_no_previous_events()
        .when(ProposalCommand::Draft(draft()))
        .then_expect_events(vec![drafted()]);
}

#[test]
fn a_draft_with_a_score_over_100_is_refused() {
    let mut bad = draft();
    bad.score = 101;
    let result = Framework::with(())
        .given_no_previous_events()
        .when(ProposalCommand::Draft(bad))
        .inspect_result();
    assert!(matches!(result, Err(ProposalError::InvalidDraft(_))));
}

#[test]
fn an_approver_approves_a_pending_proposal() {
    Framework::with(())
        .given(vec![drafted()])
        .when(ProposalCommand::Approve(approver()))
        .then_expect_events(vec![approved()]);
}

#[test]
fn an_admin_may_approve_too() {
    let admin = decision("admin@example.com", Role::Admin);
    Framework::with(())
        .given(vec![drafted()])
        .when(ProposalCommand::Approve(admin.clone()))
        .then_expect_events(vec![ProposalEvent::Approved(admin)]);
}

#[test]
fn approving_a_rejected_proposal_is_refused() {
    Framework::with(())
        .given(vec![
            drafted(),
            ProposalEvent::Rejected {
                decision: approver(),
                reason: "no".into(),
            },
        ])
        .when(ProposalCommand::Approve(approver()))
        .then_expect_error(ProposalError::NotPending(Status::Rejected));
}

#[test]
fn a_second_approval_is_refused() {
    Framework::with(())
        .given(vec![drafted(), approved()])
        .when(ProposalCommand::Approve(decision(
            "other@example.com",
            Role::Admin,
        )))
        .then_expect_error(ProposalError::NotPending(Status::Approved));
}

#[test]
fn a_viewer_may_not_approve() {
    Framework::with(())
        .given(vec![drafted()])
        .when(ProposalCommand::Approve(decision(
            "viewer@example.com",
            Role::Viewer,
        )))
        .then_expect_error(ProposalError::RoleMayNotDecide(Role::Viewer));
}

#[test]
fn a_viewer_may_not_reject() {
    Framework::with(())
        .given(vec![drafted()])
        .when(ProposalCommand::Reject {
            decision: decision("viewer@example.com", Role::Viewer),
            reason: "no".into(),
        })
        .then_expect_error(ProposalError::RoleMayNotDecide(Role::Viewer));
}

#[test]
fn a_viewer_may_not_roll_back() {
    Framework::with(())
        .given(vec![drafted(), approved(), started(1), succeeded()])
        .when(ProposalCommand::RequestRollback {
            actor: "viewer@example.com".into(),
            role: Role::Viewer,
            reason: "no".into(),
            at: at(),
            window: chrono::Duration::hours(1),
        })
        .then_expect_error(ProposalError::RoleMayNotDecide(Role::Viewer));
}

#[test]
fn approving_with_another_payload_hash_is_refused() {
    let mut shown_other = approver();
    shown_other.payload_hash = payload_hash(&json!({"to": "someone-else@example.com"}));
    Framework::with(())
        .given(vec![drafted()])
        .when(ProposalCommand::Approve(shown_other))
        .then_expect_error(ProposalError::PayloadChanged);
}

#[test]
fn the_requester_may_not_approve_their_own_proposal() {
    Framework::with(())
        .given(vec![drafted()])
        .when(ProposalCommand::Approve(decision(
            "requester@example.com",
            Role::Admin,
        )))
        .then_expect_error(ProposalError::SelfApproval);
}

#[test]
fn executing_without_approval_is_refused() {
    Framework::with(())
        .given(vec![drafted()])
        .when(ProposalCommand::StartExecution)
        .then_expect_error(ProposalError::NotApproved(Status::Pending));
}

#[test]
fn executing_a_rejected_proposal_is_refused() {
    Framework::with(())
        .given(vec![
            drafted(),
            ProposalEvent::Rejected {
                decision: approver(),
                reason: "no".into(),
            },
        ])
        .when(ProposalCommand::StartExecution)
        .then_expect_error(ProposalError::NotApproved(Status::Rejected));
}

#[test]
fn an_approved_proposal_starts_attempt_one_with_its_stable_key() {
    Framework::with(())
        .given(vec![drafted(), approved()])
        .when(ProposalCommand::StartExecution)
        .then_expect_events(vec![started(1)]);
}

#[test]
fn a_retryable_failure_starts_the_next_attempt_with_the_same_key() {
    Framework::with(())
        .given(vec![drafted(), approved(), started(1), failed(true)])
        .when(ProposalCommand::StartExecution)
        .then_expect_events(vec![started(2)]);
}

#[test]
fn a_final_failure_is_not_retried() {
    Framework::with(())
        .given(vec![drafted(), approved(), started(1), failed(false)])
        .when(ProposalCommand::StartExecution)
        .then_expect_error(ProposalError::CannotExecute(Status::Failed));
}

#[test]
fn an_execution_in_progress_cannot_start_twice() {
    Framework::with(())
        .given(vec![drafted(), approved(), started(1)])
        .when(ProposalCommand::StartExecution)
        .then_expect_error(ProposalError::CannotExecute(Status::Executing));
}

#[test]
fn a_result_for_another_attempt_is_refused() {
    Framework::with(())
        .given(vec![
            drafted(),
            approved(),
            started(1),
            failed(true),
            started(2),
        ])
        .when(ProposalCommand::RecordSuccess {
            attempt: 1,
            result: json!({}),
            at: at(),
        })
        .then_expect_error(ProposalError::NoSuchAttempt(1));
}

#[test]
fn an_execution_interrupted_between_call_and_record_becomes_uncertain() {
    Framework::with(())
        .given(vec![drafted(), approved(), started(1)])
        .when(ProposalCommand::RecordUncertain {
            attempt: 1,
            reason: "the process stopped after the call".into(),
        })
        .then_expect_events(vec![ProposalEvent::ExecutionUncertain {
            attempt: 1,
            reason: "the process stopped after the call".into(),
        }]);
}

fn ask_undo(actor: &str) -> ProposalCommand {
    ProposalCommand::RequestRollback {
        actor: actor.into(),
        role: Role::Approver,
        reason: "wrong channel".into(),
        at: at(),
        window: chrono::Duration::hours(1),
    }
}

fn undo_asked(actor: &str, complete: bool) -> ProposalEvent {
    ProposalEvent::RollbackRequested {
        actor: actor.into(),
        role: Role::Approver,
        reason: "wrong channel".into(),
        complete,
    }
}

#[test]
fn an_undo_is_asked_for_then_carried_out_once_by_the_executor() {
    let done = vec![drafted(), approved(), started(1), succeeded()];
    let with = |extra: Vec<ProposalEvent>| {
        let mut events = done.clone();
        events.extend(extra);
        events
    };
    Framework::with(())
        .given(done.clone())
        .when(ask_undo("approver@example.com"))
        .then_expect_events(vec![undo_asked("approver@example.com", true)]);
    // Asked for, not yet started: the executor starts it; nothing else records a result.
    Framework::with(())
        .given(with(vec![undo_asked("approver@example.com", true)]))
        .when(ProposalCommand::StartRollback)
        .then_expect_events(vec![ProposalEvent::RollbackStarted { attempt: 1 }]);
    Framework::with(())
        .given(with(vec![undo_asked("approver@example.com", true)]))
        .when(ProposalCommand::RecordRollback {
            attempt: 1,
            result: json!({}),
        })
        .then_expect_error(ProposalError::NoSuchRollbackAttempt(1));
    let started = with(vec![
        undo_asked("approver@example.com", true),
        ProposalEvent::RollbackStarted { attempt: 1 },
    ]);
    Framework::with(())
        .given(started.clone())
        .when(ProposalCommand::StartRollback)
        .then_expect_error(ProposalError::NotRollingBack(Status::RollingBack));
    Framework::with(())
        .given(started.clone())
        .when(ProposalCommand::RecordRollback {
            attempt: 1,
            result: json!({"deleted": true}),
        })
        .then_expect_events(vec![ProposalEvent::RolledBack {
            actor: "approver@example.com".into(),
            role: Role::Approver,
            result: json!({"deleted": true}),
        }]);
    // Rolled back: asked again, refused.
    let mut rolled = started.clone();
    rolled.push(ProposalEvent::RolledBack {
        actor: "approver@example.com".into(),
        role: Role::Approver,
        result: json!({}),
    });
    Framework::with(())
        .given(rolled)
        .when(ask_undo("other@example.com"))
        .then_expect_error(ProposalError::CannotRollBack(Status::RolledBack));
    // A final failure leaves the action standing, and it may be asked for again.
    let mut failed = started.clone();
    failed.push(ProposalEvent::RollbackFailed {
        attempt: 1,
        error: "message_not_found".into(),
        retryable: false,
    });
    Framework::with(())
        .given(failed)
        .when(ask_undo("approver@example.com"))
        .then_expect_events(vec![undo_asked("approver@example.com", true)]);
    // Uncertain: nothing more runs by itself.
    let mut uncertain = started;
    uncertain.push(ProposalEvent::RollbackUncertain {
        attempt: 1,
        reason: "died".into(),
    });
    Framework::with(())
        .given(uncertain)
        .when(ProposalCommand::StartRollback)
        .then_expect_error(ProposalError::NotRollingBack(Status::RollbackUncertain));
}

#[test]
fn undoing_what_needed_two_approvers_needs_two_people() {
    let executed = vec![
        quorum(2, 1),
        ProposalEvent::ApprovalAdded(approver()),
        ProposalEvent::Approved(decision("second@example.com", Role::Approver)),
        started(1),
        succeeded(),
    ];
    Framework::with(())
        .given(executed.clone())
        .when(ask_undo("approver@example.com"))
        .then_expect_events(vec![undo_asked("approver@example.com", false)]);
    let mut one = executed.clone();
    one.push(undo_asked("approver@example.com", false));
    // Short by one: the executor has nothing to start.
    Framework::with(())
        .given(one.clone())
        .when(ProposalCommand::StartRollback)
        .then_expect_error(ProposalError::NotRollingBack(Status::Succeeded));
    Framework::with(())
        .given(one.clone())
        .when(ask_undo("APPROVER@example.com"))
        .then_expect_error(ProposalError::AlreadyAskedToUndo(
            "APPROVER@example.com".into(),
        ));
    Framework::with(())
        .given(one)
        .when(ask_undo("second@example.com"))
        .then_expect_events(vec![undo_asked("second@example.com", true)]);
}

#[test]
fn an_outcome_before_any_execution_is_refused() {
    Framework::with(())
        .given(vec![drafted(), approved()])
        .when(ProposalCommand::RecordOutcome {
            kind: "recovered".into(),
            summary: "recovered $10.00".into(),
            value_cents: Some(1000),
        })
        .then_expect_error(ProposalError::NotExecuted(Status::Approved));
}

#[test]
fn events_keep_their_json_shape() {
    // Stored events are read back for years: their JSON shape is a contract.
    let value = serde_json::to_value(approved()).unwrap_or_default();
    assert_eq!(
        value,
        json!({"Approved": {
            "actor": "approver@example.com",
            "role": "approver",
            "comment": "go",
            "payload_hash": hash(),
        }})
    );
    let back: ProposalEvent =
        serde_json::from_value(serde_json::to_value(drafted()).unwrap_or_default())
            .unwrap_or_else(|e| panic!("drafted does not read back: {e}"));
    assert_eq!(back, drafted());
}

#[test]
fn a_revision_changes_the_payload_so_an_old_approval_no_longer_matches() {
    Framework::with(())
        .given(vec![
            drafted(),
            ProposalEvent::Revised {
                revision: revision("stripe:evt_2"),
                payload_hash: payload_hash(&revision("stripe:evt_2").action),
            },
        ])
        .when(ProposalCommand::Approve(approver()))
        .then_expect_error(ProposalError::PayloadChanged);
}

#[test]
fn a_proposal_takes_each_signal_once() {
    Framework::with(())
        .given(vec![
            drafted(),
            ProposalEvent::Revised {
                revision: revision("stripe:evt_2"),
                payload_hash: payload_hash(&revision("stripe:evt_2").action),
            },
        ])
        .when(ProposalCommand::Revise(revision("stripe:evt_2")))
        .then_expect_error(ProposalError::AlreadyRevised("stripe:evt_2".into()));
    // The signal it was drafted from counts too.
    Framework::with(())
        .given(vec![drafted()])
        .when(ProposalCommand::Revise(revision("stripe:evt_1")))
        .then_expect_error(ProposalError::AlreadyRevised("stripe:evt_1".into()));
}

#[test]
fn undo_is_refused_once_the_window_has_closed() {
    Framework::with(())
        .given(vec![drafted(), approved(), started(1), succeeded()])
        .when(ProposalCommand::RequestRollback {
            actor: "approver@example.com".into(),
            role: Role::Approver,
            reason: "late".into(),
            at: at() + chrono::Duration::minutes(61),
            window: chrono::Duration::hours(1),
        })
        .then_expect_error(ProposalError::UndoWindowClosed(
            at() + chrono::Duration::hours(1),
        ));
}

#[test]
fn a_person_resolves_an_uncertain_execution_by_marking_it_done_or_retrying() {
    let uncertain = vec![
        drafted(),
        approved(),
        started(1),
        ProposalEvent::ExecutionUncertain {
            attempt: 1,
            reason: "died".into(),
        },
    ];
    Framework::with(())
        .given(uncertain.clone())
        .when(ProposalCommand::MarkDone {
            actor: "viewer@example.com".into(),
            role: Role::Viewer,
            note: None,
        })
        .then_expect_error(ProposalError::RoleMayNotDecide(Role::Viewer));
    let mut retried = uncertain;
    retried.push(ProposalEvent::RetryRequested {
        actor: "approver@example.com".into(),
        role: Role::Approver,
    });
    // After a retry is asked for, the next attempt keeps the same key.
    Framework::with(())
        .given(retried)
        .when(ProposalCommand::StartExecution)
        .then_expect_events(vec![started(2)]);
}

#[test]
fn an_outcome_of_one_kind_is_recorded_once() {
    let outcome = ProposalEvent::OutcomeRecorded {
        kind: "recovered".into(),
        summary: "recovered $10.00".into(),
        value_cents: Some(1000),
    };
    Framework::with(())
        .given(vec![
            drafted(),
            approved(),
            started(1),
            succeeded(),
            outcome,
        ])
        .when(ProposalCommand::RecordOutcome {
            kind: "recovered".into(),
            summary: "recovered $10.00".into(),
            value_cents: Some(1000),
        })
        .then_expect_error(ProposalError::OutcomeAlreadyRecorded("recovered".into()));
}

// ---- Quorum, self-approval on every path, expiry and escalation. ----

fn drafted_with(terms: ApprovalTerms) -> ProposalEvent {
    let mut draft = draft();
    draft.terms = terms;
    ProposalEvent::Drafted {
        draft,
        payload_hash: hash(),
    }
}

fn quorum(approvals: u32, rejections: u32) -> ProposalEvent {
    drafted_with(ApprovalTerms {
        approvals_needed: approvals,
        rejections_needed: rejections,
        ..ApprovalTerms::default()
    })
}

fn second() -> Decision {
    decision("second@example.com", Role::Approver)
}

fn rejection(decision: Decision) -> ProposalCommand {
    ProposalCommand::Reject {
        decision,
        reason: "not now".into(),
    }
}

fn hours(n: i64) -> DateTime<Utc> {
    at() + chrono::Duration::hours(n)
}

fn ladder() -> ProposalEvent {
    drafted_with(ApprovalTerms {
        expires_at: Some(hours(10)),
        escalations: vec![
            crate::domain::EscalationStep {
                at: hours(4),
                to: vec!["lead@example.com".into()],
            },
            crate::domain::EscalationStep {
                at: hours(8),
                to: vec!["cfo@example.com".into(), "ceo@example.com".into()],
            },
        ],
        ..ApprovalTerms::default()
    })
}

#[test]
fn with_a_quorum_of_two_the_first_approval_leaves_it_pending() {
    Framework::with(())
        .given(vec![quorum(2, 1)])
        .when(ProposalCommand::Approve(approver()))
        .then_expect_events(vec![ProposalEvent::ApprovalAdded(approver())]);
}

#[test]
fn the_second_distinct_approval_approves_it() {
    Framework::with(())
        .given(vec![quorum(2, 1), ProposalEvent::ApprovalAdded(approver())])
        .when(ProposalCommand::Approve(second()))
        .then_expect_events(vec![ProposalEvent::Approved(second())]);
}

#[test]
fn the_same_approver_twice_does_not_count_twice() {
    Framework::with(())
        .given(vec![quorum(2, 1), ProposalEvent::ApprovalAdded(approver())])
        .when(ProposalCommand::Approve(approver()))
        .then_expect_error(ProposalError::AlreadyApprovedBy(
            "approver@example.com".into(),
        ));
}

#[test]
fn the_same_approver_under_another_case_does_not_count_twice() {
    Framework::with(())
        .given(vec![quorum(3, 1), ProposalEvent::ApprovalAdded(approver())])
        .when(ProposalCommand::Approve(decision(
            "Approver@Example.com",
            Role::Approver,
        )))
        .then_expect_error(ProposalError::AlreadyApprovedBy(
            "Approver@Example.com".into(),
        ));
}

#[test]
fn with_a_quorum_of_three_it_takes_three_people() {
    let third = decision("third@example.com", Role::Admin);
    Framework::with(())
        .given(vec![
            quorum(3, 1),
            ProposalEvent::ApprovalAdded(approver()),
            ProposalEvent::ApprovalAdded(second()),
        ])
        .when(ProposalCommand::Approve(third.clone()))
        .then_expect_events(vec![ProposalEvent::Approved(third)]);
}

#[test]
fn by_default_one_rejection_ends_it_even_after_an_approval() {
    Framework::with(())
        .given(vec![quorum(2, 1), ProposalEvent::ApprovalAdded(approver())])
        .when(rejection(second()))
        .then_expect_events(vec![ProposalEvent::Rejected {
            decision: second(),
            reason: "not now".into(),
        }]);
}

#[test]
fn an_approver_may_not_reject_what_they_approved() {
    Framework::with(())
        .given(vec![quorum(2, 1), ProposalEvent::ApprovalAdded(approver())])
        .when(rejection(approver()))
        .then_expect_error(ProposalError::AlreadyApprovedBy(
            "approver@example.com".into(),
        ));
}

#[test]
fn when_rejections_count_like_approvals_one_rejection_leaves_it_pending() {
    Framework::with(())
        .given(vec![quorum(2, 2)])
        .when(rejection(approver()))
        .then_expect_events(vec![ProposalEvent::RejectionAdded {
            decision: approver(),
            reason: "not now".into(),
        }]);
    Framework::with(())
        .given(vec![
            quorum(2, 2),
            ProposalEvent::RejectionAdded {
                decision: approver(),
                reason: "not now".into(),
            },
        ])
        .when(rejection(second()))
        .then_expect_events(vec![ProposalEvent::Rejected {
            decision: second(),
            reason: "not now".into(),
        }]);
}

#[test]
fn a_rejecter_may_not_then_approve() {
    Framework::with(())
        .given(vec![
            quorum(2, 2),
            ProposalEvent::RejectionAdded {
                decision: approver(),
                reason: "not now".into(),
            },
        ])
        .when(ProposalCommand::Approve(approver()))
        .then_expect_error(ProposalError::AlreadyRejectedBy(
            "approver@example.com".into(),
        ));
}

#[test]
fn a_revision_clears_the_approvals_given_to_the_payload_before() {
    let revised = revision("stripe:evt_2");
    let mut again = approver();
    again.payload_hash = payload_hash(&revised.action);
    Framework::with(())
        .given(vec![
            quorum(2, 1),
            ProposalEvent::ApprovalAdded(approver()),
            ProposalEvent::Revised {
                payload_hash: payload_hash(&revised.action),
                revision: revised,
            },
        ])
        .when(ProposalCommand::Approve(again.clone()))
        .then_expect_events(vec![ProposalEvent::ApprovalAdded(again)]);
}

#[test]
fn the_requester_may_not_approve_under_any_of_their_names() {
    let mut by_slack = draft();
    by_slack.requested_by = Some("slack:U123".into());
    let mut decider = approver();
    decider.identities = vec!["approver@example.com".into(), "slack:U123".into()];
    for approvals in [1, 2] {
        let mut draft = by_slack.clone();
        draft.terms.approvals_needed = approvals;
        Framework::with(())
            .given(vec![ProposalEvent::Drafted {
                draft,
                payload_hash: hash(),
            }])
            .when(ProposalCommand::Approve(decider.clone()))
            .then_expect_error(ProposalError::SelfApproval);
    }
}

#[test]
fn a_requester_who_is_one_of_several_approvers_still_may_not_approve() {
    let mut draft = draft();
    draft.terms.approvals_needed = 2;
    Framework::with(())
        .given(vec![
            ProposalEvent::Drafted {
                draft,
                payload_hash: hash(),
            },
            ProposalEvent::ApprovalAdded(approver()),
        ])
        .when(ProposalCommand::Approve(decision(
            "requester@example.com",
            Role::Admin,
        )))
        .then_expect_error(ProposalError::SelfApproval);
}

#[test]
fn expiry_is_refused_before_its_time_and_recorded_after() {
    Framework::with(())
        .given(vec![ladder()])
        .when(ProposalCommand::Expire { at: hours(9) })
        .then_expect_error(ProposalError::NotExpiredYet(hours(10)));
    Framework::with(())
        .given(vec![ladder()])
        .when(ProposalCommand::Expire { at: hours(10) })
        .then_expect_events(vec![ProposalEvent::Expired { at: hours(10) }]);
}

#[test]
fn an_expired_proposal_can_no_longer_be_approved() {
    Framework::with(())
        .given(vec![ladder(), ProposalEvent::Expired { at: hours(10) }])
        .when(ProposalCommand::Approve(approver()))
        .then_expect_error(ProposalError::NotPending(Status::Expired));
}

#[test]
fn escalation_goes_up_the_ladder_one_level_at_a_time() {
    Framework::with(())
        .given(vec![ladder()])
        .when(ProposalCommand::Escalate { at: hours(3) })
        .then_expect_error(ProposalError::EscalationNotDue(hours(4)));
    Framework::with(())
        .given(vec![ladder()])
        .when(ProposalCommand::Escalate { at: hours(9) })
        .then_expect_events(vec![ProposalEvent::Escalated {
            at: hours(9),
            level: 1,
            to: vec!["lead@example.com".into()],
        }]);
    let level_one = ProposalEvent::Escalated {
        at: hours(4),
        level: 1,
        to: vec!["lead@example.com".into()],
    };
    Framework::with(())
        .given(vec![ladder(), level_one.clone()])
        .when(ProposalCommand::Escalate { at: hours(5) })
        .then_expect_error(ProposalError::EscalationNotDue(hours(8)));
    Framework::with(())
        .given(vec![ladder(), level_one.clone()])
        .when(ProposalCommand::Escalate { at: hours(8) })
        .then_expect_events(vec![ProposalEvent::Escalated {
            at: hours(8),
            level: 2,
            to: vec!["cfo@example.com".into(), "ceo@example.com".into()],
        }]);
    let level_two = ProposalEvent::Escalated {
        at: hours(8),
        level: 2,
        to: vec![],
    };
    Framework::with(())
        .given(vec![ladder(), level_one, level_two])
        .when(ProposalCommand::Escalate { at: hours(9) })
        .then_expect_error(ProposalError::NoFurtherEscalation);
}

#[test]
fn a_decided_proposal_is_neither_expired_nor_escalated() {
    let decided = vec![ladder(), ProposalEvent::Approved(approver())];
    Framework::with(())
        .given(decided.clone())
        .when(ProposalCommand::Escalate { at: hours(9) })
        .then_expect_error(ProposalError::NotPending(Status::Approved));
    Framework::with(())
        .given(decided)
        .when(ProposalCommand::Expire { at: hours(11) })
        .then_expect_error(ProposalError::NotPending(Status::Approved));
}

#[test]
fn what_is_due_is_expiry_first_then_the_next_escalation() {
    let mut proposal = Proposal::default();
    proposal.apply(ladder());
    assert_eq!(proposal.due(hours(3)), None);
    assert_eq!(
        proposal.due(hours(4)),
        Some(ProposalCommand::Escalate { at: hours(4) })
    );
    assert_eq!(
        proposal.due(hours(10)),
        Some(ProposalCommand::Expire { at: hours(10) })
    );
    proposal.apply(ProposalEvent::Approved(approver()));
    assert_eq!(proposal.due(hours(10)), None);
}

#[test]
fn new_events_keep_the_json_shape_others_read() {
    let escalated = ProposalEvent::Escalated {
        at: at(),
        level: 1,
        to: vec!["a@x.com".into()],
    };
    assert_eq!(
        serde_json::to_value(&escalated).unwrap_or_default(),
        json!({"Escalated": {"at": "2027-01-15T08:00:00Z", "level": 1, "to": ["a@x.com"]}})
    );
    assert_eq!(escalated.event_type(), "Escalated");
    let added = ProposalEvent::ApprovalAdded(approver());
    assert_eq!(
        serde_json::to_value(&added).unwrap_or_default(),
        json!({"ApprovalAdded": {
            "actor": "approver@example.com",
            "role": "approver",
            "comment": "go",
            "payload_hash": hash(),
        }})
    );
    // A draft recorded before quorums existed reads back with the default terms.
    let mut old = serde_json::to_value(drafted()).unwrap_or_default();
    assert!(old.pointer("/Drafted/approvals_needed").is_none());
    if let Some(body) = old.get_mut("Drafted").and_then(|b| b.as_object_mut()) {
        body.remove("terms");
    }
    let back: ProposalEvent = serde_json::from_value(old)
        .unwrap_or_else(|e| panic!("an old draft does not read back: {e}"));
    assert_eq!(back, drafted());
}

#[test]
fn a_decision_past_the_expiry_is_refused_by_the_proposal_itself() {
    let late = Decision {
        at: Some(hours(10)),
        ..approver()
    };
    Framework::with(())
        .given(vec![ladder()])
        .when(ProposalCommand::Approve(late.clone()))
        .then_expect_error(ProposalError::PastExpiry(hours(10)));
    Framework::with(())
        .given(vec![ladder()])
        .when(rejection(late))
        .then_expect_error(ProposalError::PastExpiry(hours(10)));
    Framework::with(())
        .given(vec![ladder()])
        .when(ProposalCommand::Approve(Decision {
            at: None,
            ..approver()
        }))
        .then_expect_error(ProposalError::NoDecisionTime);
    let in_time = Decision {
        at: Some(hours(9)),
        ..approver()
    };
    Framework::with(())
        .given(vec![ladder()])
        .when(ProposalCommand::Approve(in_time.clone()))
        .then_expect_events(vec![ProposalEvent::Approved(in_time)]);
}

#[test]
fn a_revision_brings_the_terms_of_the_revised_action() {
    // Drafted needing one approval; the revision's larger amount needs two, and a new expiry.
    let later = at() + chrono::Duration::hours(48);
    let mut revised = revision("stripe:evt_2");
    revised.terms = Some(ApprovalTerms {
        approvals_needed: 2,
        expires_at: Some(later),
        ..ApprovalTerms::default()
    });
    let mut again = approver();
    again.payload_hash = payload_hash(&revised.action);
    Framework::with(())
        .given(vec![
            drafted(),
            ProposalEvent::Revised {
                payload_hash: payload_hash(&revised.action),
                revision: revised.clone(),
            },
        ])
        .when(ProposalCommand::Approve(again.clone()))
        .then_expect_events(vec![ProposalEvent::ApprovalAdded(again)]);
    // A revision recorded before terms were re-derived keeps the draft's.
    let mut old = revised;
    old.terms = None;
    let mut once = approver();
    once.payload_hash = payload_hash(&old.action);
    Framework::with(())
        .given(vec![
            drafted(),
            ProposalEvent::Revised {
                payload_hash: payload_hash(&old.action),
                revision: old,
            },
        ])
        .when(ProposalCommand::Approve(once.clone()))
        .then_expect_events(vec![ProposalEvent::Approved(once)]);
}
