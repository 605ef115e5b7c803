//! A real ACME server for the certificate tests: Let's Encrypt's `pebble` (Debian's package, 2.4,
//! which `make test` installs when missing) that really validates, with `pebble-challtestsrv` as its
//! DNS (every name is 127.0.0.1), on free loopback ports, started and stopped by PID.
//!
//! Pebble connects back for HTTP-01 and TLS-ALPN-01 to the ports in its config: the gateway's
//! listeners, so the gateway's addresses are chosen before pebble starts ([`Pebble::start`]).
//! Its own HTTPS certificate is issued by a test CA ([`Pebble::api_ca`]); the certificates it
//! issues chain to a root that is made anew at every start ([`Pebble::issuing_root`]).

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::free_addr;
use super::pki::Pki;
use super::process::ServerProcess;

pub struct Pebble {
    pub acme: SocketAddr,
    pub management: SocketAddr,
    dns: SocketAddr,
    dns_management: SocketAddr,
    /// Declared before `pki`: the servers stop before their folder goes.
    pebble: ServerProcess,
    challtestsrv: ServerProcess,
    pki: Pki,
}

/// Where pebble validates, and how long what it issues is valid.
pub struct PebbleSetup {
    /// The gateway's plain HTTP listener (HTTP-01).
    pub http: SocketAddr,
    /// The gateway's HTTPS listener (TLS-ALPN-01).
    pub https: SocketAddr,
    /// `None`: pebble's default (five years).
    pub validity: Option<Duration>,
}

fn binary(name: &str) -> String {
    match std::env::var("TENANTGATE_PEBBLE_DIR") {
        Ok(dir) => format!("{dir}/{name}"),
        Err(_) => name.to_owned(),
    }
}

const INSTALL: &str = "`make test` installs pebble (scripts/ensure-pebble.sh)";

impl Pebble {
    pub fn start(setup: &PebbleSetup) -> Pebble {
        let pki = Pki::new("pebble api");
        let api = pki.issue("pebble-api", &["127.0.0.1", "localhost"]);
        let mut pebble = Pebble {
            acme: free_addr(),
            management: free_addr(),
            dns: free_addr(),
            dns_management: free_addr(),
            pebble: ServerProcess::new("pebble", INSTALL, pki.dir().join("pebble.log")),
            challtestsrv: ServerProcess::new(
                "pebble-challtestsrv",
                INSTALL,
                pki.dir().join("challtestsrv.log"),
            ),
            pki,
        };
        let mut config = serde_json::json!({
            "pebble": {
                "listenAddress": pebble.acme.to_string(),
                "managementListenAddress": pebble.management.to_string(),
                "certificate": api.cert,
                "privateKey": api.key,
                "httpPort": setup.http.port(),
                "tlsPort": setup.https.port(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
            }
        });
        if let Some(validity) = setup.validity {
            config["pebble"]["certificateValidityPeriod"] = validity.as_secs().max(1).into();
        }
        let config_path = pebble.pki.dir().join("pebble.json");
        std::fs::write(&config_path, config.to_string()).expect("pebble config");

        // Its own challenge servers off: the gateway answers the challenges.
        let mut dns = Command::new(binary("pebble-challtestsrv"));
        dns.args(["-management", &pebble.dns_management.to_string()])
            .args(["-dns01", &pebble.dns.to_string()])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            // Pebble asks for AAAA first; the gateway listens on IPv4 loopback only.
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""]);
        let dns_management = pebble.dns_management;
        pebble.challtestsrv.spawn(dns, || answers(dns_management));

        let mut server = Command::new(binary("pebble"));
        server
            .arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &pebble.dns.to_string(), "-strict"])
            // Validate at once, never reuse an authorization, never reject a good nonce: every
            // order is really validated, and nothing in a test depends on chance.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_AUTHZREUSE", "0")
            .env("PEBBLE_WFE_NONCEREJECT", "0");
        let acme = pebble.acme;
        pebble.pebble.spawn(server, || answers(acme));
        pebble
    }

    /// The ACME directory URL a gateway is configured with.
    pub fn directory(&self) -> String {
        format!("https://{}/dir", self.acme)
    }

    /// The CA that signed pebble's own HTTPS certificate (the gateway's `directory_ca`).
    pub fn api_ca(&self) -> PathBuf {
        self.pki.ca_path.clone()
    }

    /// The root that certificates issued by this run of pebble chain to, PEM.
    pub async fn issuing_root(&self) -> String {
        let ca = std::fs::read(&self.pki.ca_path).expect("pebble api CA");
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("CA PEM"))
            .build()
            .expect("client");
        let url = format!("https://{}/roots/0", self.management);
        let resp = client.get(&url).send().await.expect("pebble management");
        assert!(resp.status().is_success(), "{url}: {}", resp.status());
        resp.text().await.expect("root PEM")
    }

    /// Orders pebble has been sent since it started (it lists none itself; it logs each one).
    pub fn orders(&self) -> usize {
        self.pebble.log().matches("Added order").count()
    }

    pub fn log(&self) -> String {
        self.pebble.log()
    }

    /// Stops pebble (by its PID): the CA is down from then on (pebble keeps nothing: a new one has
    /// new accounts, orders and root).
    pub fn stop(&mut self) {
        self.pebble.stop();
    }
}

fn answers(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}
