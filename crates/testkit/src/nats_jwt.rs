//! NATS decentralised authentication, as `nsc` sets it up: an operator, accounts and users as
//! NKeys, each with a JWT signed by the key above it (the operator signs itself), and the
//! `.creds` file a user connects with.
//!
//! The claims follow the `nats-io/jwt` v2 library: header `{"typ":"JWT","alg":"ed25519-nkey"}`,
//! then `jti`, `iat`, `iss`, `sub`, `name` and a `nats` object with the claim's `type` and
//! `version: 2`; the three parts are base64url without padding, and the signature is the
//! issuer's ed25519 signature over `header.payload`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nkeys::KeyPair;
use serde_json::{Value, json};

/// An operator: the root of trust a server is configured with.
pub(crate) struct Operator {
    key: KeyPair,
    /// Its self-signed JWT (`operator:` in the server's configuration).
    pub(crate) jwt: String,
}

/// An account, signed by its operator; JetStream enabled without limits.
pub(crate) struct Account {
    key: KeyPair,
    /// Its JWT (`resolver_preload` in the server's configuration).
    pub(crate) jwt: String,
}

impl Operator {
    /// A new operator called `name`.
    pub(crate) fn new(name: &str) -> anyhow::Result<Operator> {
        let key = KeyPair::new_operator();
        let jwt = signed(&key, &key.public_key(), name, json!({ "type": "operator" }))?;
        Ok(Operator { key, jwt })
    }

    /// A new account called `name` under this operator, with JetStream and no other limits.
    pub(crate) fn account(&self, name: &str) -> anyhow::Result<Account> {
        // What `nsc edit account --js-mem-storage -1 --js-disk-storage -1 --js-streams -1
        // --js-consumer -1` adds: -1 is no limit.
        let jetstream = json!({
            "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1,
        });
        self.account_with(name, jetstream)
    }

    /// A new account called `name` under this operator without JetStream, as the system
    /// account must be (the server refuses to start otherwise).
    pub(crate) fn system_account(&self, name: &str) -> anyhow::Result<Account> {
        self.account_with(name, json!({}))
    }

    /// An account with no limits but `jetstream`'s (JetStream is off while both of its
    /// storages are 0 or absent).
    fn account_with(&self, name: &str, jetstream: Value) -> anyhow::Result<Account> {
        let key = KeyPair::new_account();
        // What `nsc add account` gives.
        let mut limits = json!({
            "subs": -1, "data": -1, "payload": -1,
            "imports": -1, "exports": -1, "wildcards": true, "conn": -1, "leaf": -1,
        });
        if let (Some(limits), Some(jetstream)) = (limits.as_object_mut(), jetstream.as_object()) {
            limits.extend(jetstream.clone());
        }
        let nats = json!({ "type": "account", "limits": limits });
        let jwt = signed(&self.key, &key.public_key(), name, nats)?;
        Ok(Account { key, jwt })
    }
}

impl Account {
    /// The account's public key (`A…`), the name the server's resolver knows it by.
    pub(crate) fn public_key(&self) -> String {
        self.key.public_key()
    }

    /// A `.creds` file's text for a new user called `name` of this account, without limits or
    /// permissions (what `nsc add user` then `nsc generate creds` give).
    pub(crate) fn user_creds(&self, name: &str) -> anyhow::Result<String> {
        let user = KeyPair::new_user();
        let nats = json!({
            "type": "user",
            "subs": -1, "data": -1, "payload": -1,
            "pub": {}, "sub": {},
        });
        let jwt = signed(&self.key, &user.public_key(), name, nats)?;
        let seed = user
            .seed()
            .map_err(|err| anyhow::anyhow!("the user's NKey has no seed: {err}"))?;
        Ok(creds(&jwt, &seed))
    }
}

/// A JWT for `subject` called `name`, with `nats` (which gets `version: 2`), signed by `issuer`.
fn signed(issuer: &KeyPair, subject: &str, name: &str, mut nats: Value) -> anyhow::Result<String> {
    nats["version"] = json!(2);
    let iat = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let claims = json!({
        "jti": format!("{:032X}", rand::random::<u128>()),
        "iat": iat,
        "iss": issuer.public_key(),
        "sub": subject,
        "name": name,
        "nats": nats,
    });
    let header = URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signed = format!("{header}.{payload}");
    let signature = issuer
        .sign(signed.as_bytes())
        .map_err(|err| anyhow::anyhow!("cannot sign a NATS JWT: {err}"))?;
    Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

/// A `.creds` file as `nsc generate creds` writes it.
fn creds(jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parts of a JWT: header and claims as JSON, and the signature's bytes.
    fn parts(jwt: &str) -> (Value, Value, Vec<u8>, String) {
        let [header, claims, signature] =
            <[&str; 3]>::try_from(jwt.split('.').collect::<Vec<_>>()).unwrap();
        let json = |part: &str| -> Value {
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
        };
        (
            json(header),
            json(claims),
            URL_SAFE_NO_PAD.decode(signature).unwrap(),
            format!("{header}.{claims}"),
        )
    }

    #[test]
    fn each_jwt_is_signed_by_the_key_above_it() {
        let operator = Operator::new("testkit").unwrap();
        let account = operator.account("webhook").unwrap();

        let (header, claims, signature, signed) = parts(&operator.jwt);
        assert_eq!(header, json!({ "typ": "JWT", "alg": "ed25519-nkey" }));
        assert_eq!(claims["iss"], claims["sub"]);
        assert_eq!(claims["nats"]["type"], "operator");
        assert_eq!(claims["nats"]["version"], 2);
        let issuer = KeyPair::from_public_key(claims["iss"].as_str().unwrap()).unwrap();
        issuer.verify(signed.as_bytes(), &signature).unwrap();

        let (_, claims, signature, signed) = parts(&account.jwt);
        assert_eq!(claims["sub"], account.public_key());
        assert_eq!(claims["iss"], operator.key.public_key());
        assert_eq!(claims["nats"]["type"], "account");
        assert_eq!(claims["nats"]["limits"]["disk_storage"], -1);
        assert_eq!(claims["nats"]["limits"]["conn"], -1);
        issuer.verify(signed.as_bytes(), &signature).unwrap();
        let system = operator.system_account("SYS").unwrap();
        let (_, claims, ..) = parts(&system.jwt);
        assert_eq!(claims["nats"]["limits"]["conn"], -1);
        assert!(claims["nats"]["limits"].get("disk_storage").is_none());
        // Another key's signature does not verify.
        let stranger = KeyPair::new_operator();
        assert!(stranger.verify(signed.as_bytes(), &signature).is_err());
    }

    #[test]
    fn a_creds_file_holds_the_users_jwt_signed_by_its_account_and_its_seed() {
        let account = Operator::new("testkit")
            .unwrap()
            .account("webhook")
            .unwrap();
        let creds = account.user_creds("receiver").unwrap();
        let lines: Vec<&str> = creds.lines().collect();
        assert_eq!(lines[0], "-----BEGIN NATS USER JWT-----");
        assert_eq!(lines[2], "------END NATS USER JWT------");
        let seed_at = lines
            .iter()
            .position(|line| *line == "-----BEGIN USER NKEY SEED-----")
            .unwrap();
        assert_eq!(lines[seed_at + 2], "------END USER NKEY SEED------");

        let (_, claims, signature, signed) = parts(lines[1]);
        assert_eq!(claims["iss"], account.public_key());
        assert_eq!(claims["nats"]["type"], "user");
        account.key.verify(signed.as_bytes(), &signature).unwrap();
        let user = KeyPair::from_seed(lines[seed_at + 1]).unwrap();
        assert_eq!(claims["sub"], user.public_key());
    }
}
