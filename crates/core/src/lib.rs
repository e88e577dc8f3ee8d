//! The Preservica webhook protocol, without IO.
//!
//! Preservica notifies subscribers of events (an ingest indexed, an entity moved, a security
//! tag changed, an ingest failed) by POSTing signed JSON to their web server. This crate holds
//! everything about that protocol that does not touch a socket, a clock or a random source:
//!
//! - the wire enums [`TriggerType`] and [`EntityType`];
//! - the payload models [`Subscription`], [`NewSubscription`], [`Delivery`] and [`Event`];
//! - the shared [`Secret`], delivery [`sign`]ing and [`verify`]ing, and the redelivery
//!   [`DeliveryKey`];
//! - the handshake, [`challenge_response`], which refuses the codes that would turn it into a
//!   signing oracle;
//! - the [`Receiver`], which turns a request (method, URI, headers, body bytes) into a
//!   [`Decision`]: answer a challenge, accept a verified delivery, or refuse;
//! - [`recovery`]: the windows no receiver was up ([`recovery::gaps`]) and the deliveries
//!   that stand in for the notifications missed then ([`recovery::recover`]);
//! - the [`Backoff`] the client and the server's workers both wait by between attempts (the
//!   caller draws the jitter).
//!
//! The client and server crates build on it; tests drive it in memory.
//!
//! # Example
//!
//! ```
//! use preservica_webhook_core::{
//!     bytes::Bytes, http::{HeaderMap, Method, StatusCode},
//!     sign, Decision, Receiver, Secret, TriggerType,
//! };
//!
//! let secret = Secret::new("my_shared_secret")?;
//! let receiver = Receiver::new([secret.clone()])?;
//!
//! // Preservica's handshake when the subscription is created.
//! let handshake = receiver.decide(
//!     &Method::POST,
//!     &"/?challengeCode=c306c99ca3a736124fa711bec53c737d".parse()?,
//!     &HeaderMap::new(),
//!     Bytes::new(),
//! );
//! assert_eq!(handshake.reply().status, StatusCode::OK);
//!
//! // A delivery, signed over its raw bytes.
//! let body = Bytes::from_static(br#"{"trigger":"FULL_TEXT_INDEXED","events":[{"entityType":"IO","entityRef":"7fdea7e0"}]}"#);
//! let mut headers = HeaderMap::new();
//! headers.insert("Preservica-Signature", sign(&secret, &body).to_hex().parse()?);
//! match receiver.decide(&Method::POST, &"/".parse()?, &headers, body) {
//!     Decision::Accept(verified) => {
//!         let delivery = verified.delivery().expect("valid JSON");
//!         assert_eq!(delivery.trigger, Some(TriggerType::FullTextIndexed));
//!         // Store `verified.body()` durably, then answer `Reply::accepted()`.
//!     }
//!     other => panic!("unexpected {other:?}"),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

pub mod backoff;
pub mod challenge;
pub mod model;
pub mod receiver;
pub mod recovery;
pub mod signing;
pub mod wire;

pub use bytes;
pub use http;

pub use crate::backoff::Backoff;
pub use crate::challenge::{
    AnswerError, CHALLENGE_PARAMETER, ChallengeAnswer, ChallengeError, MAX_CHALLENGE_CODE_LEN,
    challenge_response, check_challenge_answer, check_challenge_code, insecure_challenge_hmac,
};
pub use crate::model::{
    DecodeError, Delivery, DeliveryKey, EntityRef, Event, InvalidEntityRef, NewSubscription,
    Subscription, SubscriptionId,
};
pub use crate::receiver::{
    ChallengeReply, Decision, Head, Receiver, ReceiverError, Rejection, Reply, SignedRequest,
    VerifiedDelivery,
};
pub use crate::signing::{
    SIGNATURE_HEADER, SIGNATURE_PREFIX, Secret, SecretError, Signature, VerifyError, sign, verify,
    verify_signature,
};
pub use crate::wire::{EntityType, KNOWN_TRIGGERS, TriggerType};
