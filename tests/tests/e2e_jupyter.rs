//! JupyterLab 4 in headless Chromium through Portico: a new notebook, a cell
//! run on the kernel, the notebook saved; both with Jupyter unmodified (two of them side by
//! side in one browser) and with Jupyter started with `base_url` = the prefix. With Jupyter
//! unmodified, Notebook 7's file browser opens a terminal that runs a command. Every request
//! the pages make, WebSockets included, must stay under the app's own prefix, and the console
//! must show no error.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, ensure};
use fantoccini::{key::Key, wd::WindowHandle};
use portico_tests::e2e::{AppSpec, Browser, Kind, Session};
use serde_json::{Value, json};

/// The notebook JupyterLab's launcher creates.
const LAB_NOTEBOOK: &str = "Untitled.ipynb";

/// A Jupyter server's directories: the notebooks' root, and its workspaces and settings, which
/// would otherwise live in the shared home and reopen a previous run's tabs.
struct Dirs {
    _temp: tempfile::TempDir,
    root: PathBuf,
}

impl Dirs {
    fn new() -> anyhow::Result<Self> {
        let temp = tempfile::tempdir().context("creating a Jupyter root")?;
        for dir in ["notebooks", "workspaces", "settings"] {
            std::fs::create_dir_all(temp.path().join(dir))?;
        }
        // Canonical, as the kernel reports its working directory.
        let root = temp.path().join("notebooks").canonicalize()?;
        Ok(Self { _temp: temp, root })
    }

    /// Jupyter under `id`, in these directories.
    fn spec<'a>(&self, id: &'a str) -> AppSpec<'a> {
        // Notebook 7's page config, which it does not read from `settings/` (see there).
        AppSpec::new(id, Kind::Jupyter)
            .args(self.args())
            .args(["--config=notebook_page_config.py"])
    }

    /// The arguments that put the server in these directories.
    fn args(&self) -> Vec<String> {
        let base = self.root.parent().unwrap_or(&self.root);
        vec![
            format!("--ServerApp.root_dir={}", self.root.display()),
            format!(
                "--LabApp.workspaces_dir={}",
                base.join("workspaces").display()
            ),
            format!(
                "--LabApp.user_settings_dir={}",
                base.join("settings").display()
            ),
        ]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jupyterlab_unmodified_two_side_by_side() -> anyhow::Result<()> {
    let (one, two) = (Dirs::new()?, Dirs::new()?);
    let specs = [one.spec("jupyter"), two.spec("jupyter2")];
    let Some(mut session) = Session::open_apps("jupyter", &specs, "", "").await? else {
        return Ok(());
    };
    let outcome = side_by_side(&mut session.browser, &one.root, &two.root).await;
    session.finish(outcome).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jupyterlab_with_base_url_keeps_prefix() -> anyhow::Result<()> {
    let dirs = Dirs::new()?;
    let specs = [dirs
        .spec("nb")
        .args(["--ServerApp.base_url=/proxy/nb/"])
        .ready("/proxy/nb/api")];
    // Probed at /proxy/nb/api before it takes traffic: the prefix stays on the probe too.
    let service = "keep_prefix = true\nhealth_path = \"/api\"\n";
    let Some(mut session) = Session::open_apps("jupyter-base-url", &specs, service, "").await?
    else {
        return Ok(());
    };
    let outcome = base_url(&mut session.browser, &dirs.root).await;
    session.finish(outcome).await
}

async fn side_by_side(
    browser: &mut Browser,
    root_one: &Path,
    root_two: &Path,
) -> anyhow::Result<()> {
    let (one, two) = ("/proxy/jupyter/", "/proxy/jupyter2/");
    let first = browser.client.window().await?;
    notebook_round_trip(browser, one, root_one).await?;
    no_escapes(browser, &[one]).await?;

    // The second Jupyter in a second tab of the same browser: its `_xsrf` and user cookies
    // have the same names as the first one's, scoped to another prefix.
    let second = browser.client.new_window(true).await?.handle;
    browser.client.switch_to_window(second.clone()).await?;
    notebook_round_trip(browser, two, root_two).await?;

    // Back in the first tab, its kernel still answers and a save still passes the XSRF check.
    browser.client.switch_to_window(first).await?;
    run_cell(browser, "6*7", "42").await?;
    save(browser).await?;
    saved_notebook(root_one, &["6*7", "42"]).await?;
    let listing = contents_listing(browser, one).await?;
    ensure!(
        listing == [LAB_NOTEBOOK],
        "{one} lists {listing:?}, not only its own notebook"
    );
    no_escapes(browser, &[one, two]).await?;

    // Notebook 7 of the second Jupyter, in its tab: Portico rewrites its pages' config too.
    browser.client.switch_to_window(second).await?;
    notebook7_terminal(browser, two).await?;
    no_escapes(browser, &[one, two]).await
}

async fn base_url(browser: &mut Browser, root: &Path) -> anyhow::Result<()> {
    let prefix = "/proxy/nb/";
    notebook_round_trip(browser, prefix, root).await?;
    no_escapes(browser, &[prefix]).await
}

/// Opens JupyterLab under `prefix`, creates a notebook from the launcher, runs `1+1` and a cell
/// that prints the kernel's directory (which must be this server's root), and saves.
async fn notebook_round_trip(browser: &Browser, prefix: &str, root: &Path) -> anyhow::Result<()> {
    // `/proxy/{id}/` answers with a redirect to `lab`: it must stay under the prefix.
    browser.goto(prefix).await?;
    browser
        .wait_for(
            "JupyterLab to open under its prefix",
            "return location.pathname === arguments[0] + 'lab';",
            vec![json!(prefix)],
        )
        .await?;
    browser
        .click(".jp-LauncherCard[data-category='Notebook']")
        .await?;
    browser
        .wait_for(
            "the new notebook's kernel to be idle",
            "const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
             const status = panel && panel.querySelector('.jp-Notebook-ExecutionIndicator');
             return !!status && status.getAttribute('data-status') === 'idle';",
            vec![],
        )
        .await?;
    run_cell(browser, "1+1", "2").await?;
    let root_text = root.display().to_string();
    run_cell(browser, "import os; os.getcwd()", &format!("'{root_text}'")).await?;
    save(browser).await?;
    saved_notebook(root, &["1+1", &root_text]).await?;
    // The contents API through Portico agrees with the disk.
    let (status, body) = browser
        .fetch(&format!("{prefix}api/contents/{LAB_NOTEBOOK}"))
        .await?;
    ensure!(
        status == 200 && body.contains("1+1"),
        "GET {prefix}api/contents/{LAB_NOTEBOOK}: {status} {body}"
    );
    Ok(())
}

/// Opens Notebook 7's file browser (`tree`) under `prefix`, opens a terminal from its New menu
/// (in a tab of its own) and runs a command in it: its keys and output go through the
/// terminal's WebSocket (`terminals/websocket/{name}`).
async fn notebook7_terminal(browser: &Browser, prefix: &str) -> anyhow::Result<()> {
    browser.goto(&format!("{prefix}tree")).await?;
    browser.wait_path(&format!("{prefix}tree")).await?;
    let terminal = from_new_menu(browser, "terminal:create-new").await?;
    browser.client.switch_to_window(terminal).await?;
    // The screen's text, which `settings/overrides.json5` keeps in the page. The shell's prompt
    // comes over the WebSocket: once it shows, keys typed reach the shell.
    const SCREEN: &str = ".jp-Terminal .xterm-accessibility-tree";
    browser
        .wait_for(
            "the terminal to show a prompt",
            "const screen = document.querySelector(arguments[0]);
             return !!screen && screen.innerText.trim() !== '';",
            vec![json!(SCREEN)],
        )
        .await?;
    let path = browser.path().await?;
    ensure!(
        path.starts_with(&format!("{prefix}terminals/")),
        "the terminal opened at {path}"
    );
    // The command line reads `portico-$((6*7))`: only the shell's answer reads `portico-42`.
    browser
        .type_into(
            ".jp-Terminal .xterm-helper-textarea",
            &format!("echo portico-$((6*7)){}", char::from(Key::Enter)),
        )
        .await?;
    browser.wait_text(SCREEN, "portico-42").await
}

/// Clicks `command` in the New menu of Notebook 7's file browser and returns the tab it opens.
async fn from_new_menu(browser: &Browser, command: &str) -> anyhow::Result<WindowHandle> {
    let before = browser.client.windows().await?;
    browser.click("#filebrowser .lm-MenuBar-item").await?;
    browser
        .click(&format!(".lm-Menu-item[data-command='{command}']"))
        .await?;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let windows = browser.client.windows().await?;
        if let Some(opened) = windows.into_iter().find(|window| !before.contains(window)) {
            return Ok(opened);
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{command} opened no tab"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Types `code` into the active cell, runs it with the toolbar's button and waits for an
/// output that reads `expected`.
async fn run_cell(browser: &Browser, code: &str, expected: &str) -> anyhow::Result<()> {
    const PANEL: &str = ".jp-NotebookPanel:not(.lm-mod-hidden)";
    browser
        .type_into(&format!("{PANEL} .jp-Cell.jp-mod-active .cm-content"), code)
        .await?;
    browser
        .click(&format!(
            "{PANEL} jp-button[data-command='notebook:run-cell-and-select-next']"
        ))
        .await?;
    browser
        .wait_for(
            &format!("{code:?} to output {expected:?}"),
            "const panel = document.querySelector(arguments[0]);
             return !!panel && [...panel.querySelectorAll('.jp-OutputArea-output')]
                 .some(output => output.innerText.trim() === arguments[1]);",
            vec![json!(PANEL), json!(expected)],
        )
        .await?;
    Ok(())
}

/// Saves the active notebook with the toolbar's button (a PUT with the XSRF token) and waits
/// until its tab is clean.
async fn save(browser: &Browser) -> anyhow::Result<()> {
    browser
        .click(".jp-NotebookPanel:not(.lm-mod-hidden) jp-button[data-command='docmanager:save']")
        .await?;
    browser
        .wait_for(
            "the notebook to be saved",
            "const tab = document.querySelector('.lm-TabBar-tab.jp-mod-current');
             return !!tab && !tab.classList.contains('jp-mod-dirty');",
            vec![],
        )
        .await?;
    Ok(())
}

/// Waits until JupyterLab's notebook in `root` holds every one of `needles` (sources and
/// outputs).
async fn saved_notebook(root: &Path, needles: &[&str]) -> anyhow::Result<()> {
    let path = root.join(LAB_NOTEBOOK);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let notebook: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        // Sources and outputs, joined, whatever the notebook format splits them into.
        let flat = notebook.to_string();
        if needles
            .iter()
            .all(|needle| flat.contains(&json_text(needle)))
        {
            return Ok(());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{} does not hold {needles:?}: {text}",
            path.display()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// `text` as it appears inside a JSON string.
fn json_text(text: &str) -> String {
    let quoted = json!(text).to_string();
    quoted[1..quoted.len() - 1].to_owned()
}

/// The names in the root of the server under `prefix`, from its contents API.
async fn contents_listing(browser: &Browser, prefix: &str) -> anyhow::Result<Vec<String>> {
    let (status, body) = browser.fetch(&format!("{prefix}api/contents")).await?;
    ensure!(status == 200, "GET {prefix}api/contents: {status} {body}");
    let listing: Value = serde_json::from_str(&body)?;
    let mut names: Vec<String> = listing["content"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|entry| entry["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    Ok(names)
}

/// No request left `prefixes`, and the console shows no error.
async fn no_escapes(browser: &mut Browser, prefixes: &[&str]) -> anyhow::Result<()> {
    let outside = browser.requests_outside(prefixes).await?;
    ensure!(
        outside.is_empty(),
        "{} requests left {prefixes:?}: {outside:#?}",
        outside.len()
    );
    let errors = browser.console_errors().await?;
    ensure!(errors.is_empty(), "console errors: {errors:#?}");
    Ok(())
}
