//! Commands that talk to Preservica: subscribe, subscriptions, unsubscribe, asset, thumbnail.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, anyhow};
use preservica_webhook_client::{
    Client, CredentialOverrides, Credentials, CredentialsError, Entity, MissingValue, Thumbnail,
    ThumbnailSize,
};
use preservica_webhook_core::{EntityRef, EntityType, Subscription, SubscriptionId};
use serde::Serialize;

use crate::cli::{AssetArgs, GlobalArgs, Size, SubscribeArgs, ThumbnailArgs, UnsubscribeArgs};
use crate::config::{config_error, load_secrets};
use crate::output;

/// A client for the configured Preservica: flags, then environment, then credentials file.
///
/// # Errors
/// Credentials that are missing or unusable (the program exits 2).
pub(crate) fn client(global: &GlobalArgs) -> anyhow::Result<Client> {
    let overrides = CredentialOverrides {
        server: global.server.clone(),
        username: global.username.clone(),
        tenant: global.tenant.clone(),
        ..CredentialOverrides::default()
    };
    let credentials = Credentials::resolve(&overrides, global.credentials.as_deref()).map_err(
        |err| match err {
            CredentialsError::Missing {
                missing,
                file,
                file_state,
            } => config_error(missing_credentials(&missing, &file, &file_state)),
            other => other.into(),
        },
    )?;
    Ok(Client::builder()
        .credentials(credentials)
        .user_agent(concat!("preservica-webhook/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// Says every missing login value at once, with the places this command reads it from: the
/// flag (there is none for the password), the environment, the credentials file.
fn missing_credentials(missing: &[MissingValue], file: &Path, file_state: &str) -> String {
    let names = words(missing.iter().map(|it| it.value));
    let places: Vec<String> = missing
        .iter()
        .map(|it| match it.value {
            "server" => format!("--server HOST or {}", it.env_var),
            "username" => format!("--username NAME or {}", it.env_var),
            _ => format!("{} (the password is never a flag)", it.env_var),
        })
        .collect();
    format!(
        "no Preservica {names} given: set {}, or put {} under [credentials] in {} ({file_state})",
        places.join("; "),
        words(missing.iter().map(|it| it.key)),
        file.display()
    )
}

/// `a`, `a and b`, `a, b and c`.
fn words<'a>(items: impl ExactSizeIterator<Item = &'a str>) -> String {
    let count = items.len();
    let mut text = String::new();
    for (index, item) in items.enumerate() {
        if index > 0 {
            text.push_str(if index + 1 == count { " and " } else { ", " });
        }
        text.push_str(item);
    }
    text
}

/// `subscribe`.
///
/// # Errors
/// Configuration, and Preservica refusing (the handshake included).
pub(crate) async fn subscribe(
    global: &GlobalArgs,
    args: &SubscribeArgs,
) -> anyhow::Result<ExitCode> {
    let secrets = load_secrets(global)?;
    let client = client(global)?;
    let created = client
        .subscribe(&args.url, &args.trigger, secrets.primary())
        .await?;
    if global.json {
        output::json(&created)?;
    } else {
        output::line(created.id.as_str())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `subscriptions` / `list`.
///
/// # Errors
/// Configuration, and Preservica refusing.
pub(crate) async fn subscriptions(global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let client = client(global)?;
    let list = client.subscriptions().await?;
    if global.json {
        output::json(&list)?;
    } else if list.is_empty() {
        output::note("no subscriptions");
    } else {
        output::text(&subscription_table(&list))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The subscriptions as a table: id, trigger, url, identifiers.
pub(crate) fn subscription_table(list: &[Subscription]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|it| {
            vec![
                it.id.to_string(),
                it.trigger_type
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), ToString::to_string),
                it.url.clone(),
                if it.include_identifiers { "yes" } else { "no" }.to_owned(),
            ]
        })
        .collect();
    output::table(&["ID", "TRIGGER", "URL", "IDENTIFIERS"], &rows)
}

/// `unsubscribe`.
///
/// # Errors
/// Configuration, a refused confirmation, and any removal that failed (after trying all).
pub(crate) async fn unsubscribe(
    global: &GlobalArgs,
    args: &UnsubscribeArgs,
) -> anyhow::Result<ExitCode> {
    let client = client(global)?;
    let mut removed = Vec::new();
    let mut failed: Vec<(SubscriptionId, anyhow::Error)> = Vec::new();
    if args.all {
        let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
        if interactive && !args.yes {
            let count = client.subscriptions().await?.len();
            if count == 0 {
                output::note("no subscriptions");
                return Ok(ExitCode::SUCCESS);
            }
            if !confirm(&format!("remove all {count} subscriptions?"))? {
                return Err(anyhow!("nothing removed"));
            }
        }
        let outcome = client.unsubscribe_all().await?;
        removed = outcome.removed;
        failed = outcome
            .failed
            .into_iter()
            .map(|(id, err)| (id, anyhow::Error::new(err)))
            .collect();
    } else {
        for id in &args.ids {
            let id = SubscriptionId::new(id.trim());
            match client.unsubscribe(&id).await {
                Ok(()) => removed.push(id),
                Err(err) => failed.push((id, err.into())),
            }
        }
    }
    if failed.len() == 1 && removed.is_empty() && !global.json {
        let (id, err) = failed.remove(0);
        return Err(err.context(format!("could not unsubscribe {id}")));
    }
    if global.json {
        #[derive(Serialize)]
        struct Failure {
            id: SubscriptionId,
            error: String,
        }
        let failures: Vec<Failure> = failed
            .iter()
            .map(|(id, err)| Failure {
                id: id.clone(),
                error: format!("{err:#}"),
            })
            .collect();
        output::json(&serde_json::json!({ "removed": removed, "failed": failures }))?;
    } else {
        for id in &removed {
            output::line(&format!("unsubscribed {id}"))?;
        }
        for (id, err) in &failed {
            output::note(&format!("error: could not unsubscribe {id}: {err:#}"));
        }
    }
    if failed.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    Err(anyhow!(
        "{} of {} subscriptions could not be removed",
        failed.len(),
        failed.len() + removed.len()
    ))
}

fn confirm(question: &str) -> anyhow::Result<bool> {
    let mut err = std::io::stderr().lock();
    write!(err, "{question} [y/N] ")?;
    err.flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

/// An entity as `asset --json` prints it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct EntityOutput<'a> {
    reference: &'a str,
    entity_type: &'a str,
    title: Option<&'a str>,
    description: Option<&'a str>,
    security_tag: Option<&'a str>,
    parent: Option<&'a str>,
}

impl<'a> From<&'a Entity> for EntityOutput<'a> {
    fn from(entity: &'a Entity) -> Self {
        EntityOutput {
            reference: &entity.reference,
            entity_type: entity.entity_type.as_str(),
            title: entity.title.as_deref(),
            description: entity.description.as_deref(),
            security_tag: entity.security_tag.as_deref(),
            parent: entity.parent.as_deref(),
        }
    }
}

/// `asset`.
///
/// # Errors
/// Configuration, an unknown asset, and Preservica refusing.
pub(crate) async fn asset(global: &GlobalArgs, args: &AssetArgs) -> anyhow::Result<ExitCode> {
    let client = client(global)?;
    let entity = client.asset(&args.reference).await?;
    let view = EntityOutput::from(&entity);
    if global.json {
        output::json(&view)?;
    } else {
        let dash = |it: Option<&str>| it.unwrap_or("-").to_owned();
        let rows = vec![
            vec!["reference".to_owned(), view.reference.to_owned()],
            vec!["type".to_owned(), view.entity_type.to_owned()],
            vec!["title".to_owned(), dash(view.title)],
            vec!["description".to_owned(), dash(view.description)],
            vec!["security tag".to_owned(), dash(view.security_tag)],
            vec!["parent".to_owned(), dash(view.parent)],
        ];
        let table = output::table(&["", ""], &rows);
        // Drop the empty header line.
        output::text(table.split_once('\n').map_or("", |(_, rest)| rest))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `thumbnail`.
///
/// # Errors
/// Configuration, no such asset or no thumbnail, and download or write failures.
pub(crate) async fn thumbnail(
    global: &GlobalArgs,
    args: &ThumbnailArgs,
) -> anyhow::Result<ExitCode> {
    let client = client(global)?;
    let size = thumbnail_size(args.size);
    let reference = &args.reference;
    let no_thumbnail = || anyhow!("asset {reference} has no thumbnail");
    let (path, thumbnail) = match args.output.as_deref() {
        Some(path) if path == Path::new("-") => {
            // Thumbnails are small (400 px at most): buffer, then write stdout at once.
            let mut image = Vec::new();
            let thumbnail = client
                .thumbnail(&EntityType::Asset, reference, size, &mut image)
                .await?
                .ok_or_else(no_thumbnail)?;
            let mut out = std::io::stdout().lock();
            out.write_all(&image)?;
            out.flush()?;
            (None, thumbnail)
        }
        Some(path) => {
            let thumbnail = client
                .thumbnail_to_file(&EntityType::Asset, reference, size, path)
                .await?
                .ok_or_else(no_thumbnail)?;
            (Some(path.to_owned()), thumbnail)
        }
        None => download_thumbnail(&client, reference, size, Path::new("."))
            .await?
            .map(|(path, thumbnail)| (Some(path), thumbnail))
            .ok_or_else(no_thumbnail)?,
    };
    let Some(path) = path else {
        return Ok(ExitCode::SUCCESS);
    };
    if global.json {
        output::json(&serde_json::json!({
            "path": path,
            "contentType": thumbnail.content_type,
            "bytes": thumbnail.bytes,
        }))?;
    } else {
        output::line(&path.display().to_string())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The client's size for the command line's.
pub(crate) fn thumbnail_size(size: Size) -> ThumbnailSize {
    match size {
        Size::Small => ThumbnailSize::Small,
        Size::Medium => ThumbnailSize::Medium,
        Size::Large => ThumbnailSize::Large,
    }
}

/// Downloads an asset's thumbnail into `dir` as `REF.EXT`, the extension from the image type.
/// `Ok(None)` when the asset has no thumbnail.
///
/// # Errors
/// Download and file errors.
pub(crate) async fn download_thumbnail(
    client: &Client,
    reference: &EntityRef,
    size: ThumbnailSize,
    dir: &Path,
) -> anyhow::Result<Option<(PathBuf, Thumbnail)>> {
    let partial = dir.join(format!(".{reference}.download"));
    let Some(thumbnail) = client
        .thumbnail_to_file(&EntityType::Asset, reference, size, &partial)
        .await?
    else {
        return Ok(None);
    };
    let path = dir.join(format!("{reference}.{}", thumbnail.extension()));
    if let Err(err) = std::fs::rename(&partial, &path) {
        let _ = std::fs::remove_file(&partial);
        return Err(err)
            .with_context(|| format!("cannot move the thumbnail to {}", path.display()));
    }
    Ok(Some((path, thumbnail)))
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;

    #[test]
    fn renders_the_subscription_table() {
        let list: Vec<Subscription> = serde_json::from_str(
            r#"[{"id":"4583e1e6d2c72ed96a1151bc7dfd53c2","url":"https://hooks.example.org/","triggerType":"FULL_TEXT_INDEXED","includeIdentifiers":true},
                {"id":"b","url":"https://x/","includeIdentifiers":false}]"#,
        )
        .unwrap();
        expect![[r#"
            ID                                TRIGGER            URL                         IDENTIFIERS
            4583e1e6d2c72ed96a1151bc7dfd53c2  FULL_TEXT_INDEXED  https://hooks.example.org/  yes
            b                                 -                  https://x/                  no
        "#]]
        .assert_eq(&subscription_table(&list));
    }
}
