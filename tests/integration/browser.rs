//! Real headless browsers driven over WebDriver through the `fantoccini` crate, for the console
//! tests: Chromium (Debian `chromium` + `chromium-driver`) and Firefox (Debian `firefox-esr` +
//! geckodriver, which Debian 12 does not package: `scripts/test` builds it from crates.io into
//! `target/tools/bin`). Each test gets its own driver on a free port; screenshots go to
//! `target/console-screenshots/`.

use crate::harness::{eventually, free_port};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub struct Browser {
    pub client: Client,
    pub kind: Kind,
    driver: Child,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver and the Chromium it started are one process group.
        // SAFETY: signalling a process group we created; no memory is involved.
        unsafe {
            libc::kill(-(self.driver.id() as i32), libc::SIGKILL);
        }
        let _ = self.driver.wait();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Chromium,
    Firefox,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Chromium => "chromium",
            Kind::Firefox => "firefox",
        }
    }

    /// The driver, and the capabilities of a headless session at 1280x900 (a desktop).
    fn driver(self, port: u16) -> (Command, serde_json::Value) {
        match self {
            Kind::Chromium => {
                let mut c = Command::new("chromedriver");
                c.arg(format!("--port={port}"));
                let caps = serde_json::json!({"goog:chromeOptions": {
                    "binary": "/usr/bin/chromium",
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                             "--window-size=1280,900", "--no-first-run", "--disable-extensions",
                             "--disable-background-networking", "--disable-component-update"]
                }});
                (c, caps)
            }
            Kind::Firefox => {
                let built =
                    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tools/bin/geckodriver");
                let path = std::env::var_os("GECKODRIVER").map_or(built, PathBuf::from);
                assert!(
                    path.exists(),
                    "{} missing: scripts/test builds it (cargo install geckodriver --root target/tools)",
                    path.display()
                );
                let mut c = Command::new(path);
                c.arg(format!("--port={port}"));
                let caps = serde_json::json!({"moz:firefoxOptions": {
                    "binary": "/usr/bin/firefox-esr",
                    "args": ["-headless", "-width=1280", "-height=900"],
                    "prefs": {"app.update.enabled": false, "browser.shell.checkDefaultBrowser": false}
                }});
                (c, caps)
            }
        }
    }
}

impl Browser {
    /// `kind` headless, with its own profile.
    pub async fn start_kind(kind: Kind) -> Browser {
        let port = free_port();
        let (mut cmd, caps) = kind.driver(port);
        let driver = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("{} driver: {e} (scripts/test installs it)", kind.name()));
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        eventually("chromedriver to listen", || async {
            let r = http.get(format!("{url}/status")).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await;
        let caps = match caps {
            serde_json::Value::Object(m) => m,
            _ => unreachable!("capabilities are an object"),
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("a {} session: {e}", kind.name()));
        // Firefox ignores the size flags in some versions: set it through WebDriver too.
        client.set_window_size(1280, 900).await.unwrap();
        Browser {
            client,
            driver,
            kind,
        }
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        eventually(&format!("`{css}` on the page"), || async {
            self.client.find(Locator::Css(css)).await.ok()
        })
        .await
    }

    pub async fn count(&self, css: &str) -> usize {
        self.client
            .find_all(Locator::Css(css))
            .await
            .map_or(0, |v| v.len())
    }

    /// Wait until the text of `css` satisfies `ok`; returns it.
    pub async fn wait_text(&self, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
        eventually(what, || async {
            let el = self.client.find(Locator::Css(css)).await.ok()?;
            let t = el.text().await.ok()?;
            ok(&t).then_some(t)
        })
        .await
    }

    pub async fn click(&self, css: &str) {
        self.find(css).await.click().await.unwrap();
    }

    /// Replace the value of the input or textarea `css` with `text`.
    pub async fn fill(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        el.clear().await.unwrap();
        if text.len() > 200 || text.contains('\n') {
            // Long values (PEM) are set in one step, as a paste would.
            self.client
                .execute(
                    "arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('input'));",
                    vec![serde_json::to_value(&el).unwrap(), text.into()],
                )
                .await
                .unwrap();
        } else {
            el.send_keys(text).await.unwrap();
        }
    }

    pub async fn select(&self, css: &str, value: &str) {
        let el = self.find(css).await;
        el.select_by_value(value).await.unwrap();
    }

    /// Evaluate `js` (a function body) in the page.
    pub async fn eval(&self, js: &str) -> serde_json::Value {
        self.client.execute(js, vec![]).await.unwrap()
    }

    /// Save the page as `target/console-screenshots/NAME.png` (`NAME-firefox.png` from Firefox).
    pub async fn screenshot(&self, name: &str) {
        let name = match self.kind {
            Kind::Chromium => name.to_string(),
            Kind::Firefox => format!("{name}-firefox"),
        };
        let png = self.client.screenshot().await.unwrap();
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}
