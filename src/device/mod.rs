//! Capability detection: what the device is and has, for the Fleet Manager's
//! `DeviceCapabilities` document (`margo-agent capabilities` prints it).
//!
//! Sources, each optional (a value that cannot be read is reported as `unknown` or left out,
//! never an error): DMI (`/sys/class/dmi/id/{sys_vendor,product_name,product_serial}`) or the
//! device tree (`/proc/device-tree/{model,compatible,serial-number}`), `/proc/cpuinfo` and
//! `cpufreq` for the CPU, `/proc/meminfo`, the size of the data partition (the block device
//! under the mount holding the data directory, from `/proc/self/mountinfo` and `/sys/dev/block`:
//! `statvfs` needs `unsafe` libc calls, which this crate forbids), `/sys/class/net` for
//! interface types, and
//! `/sys/class/drm` + `/dev/nvidia*` for GPUs. Config overrides (`wfm.capabilities`) win.
//! The root directory is a parameter so tests can feed a fake `/sys` and `/proc`.

use crate::wfm::config::{CapabilityOverrides, Peripheral};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// What was detected (before it becomes the JSON document).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    pub vendor: String,
    pub model: String,
    pub serial: String,
    pub architecture: String,
    pub cores: u64,
    pub cpu_mhz: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub storage_bytes: Option<u64>,
    /// (name, type) with type `ethernet`, `wifi`, `cellular`.
    pub interfaces: Vec<(String, String)>,
    pub peripherals: Vec<Peripheral>,
}

fn read_trim(p: &Path) -> Option<String> {
    let s = std::fs::read(p).ok()?;
    // Device-tree strings end in NUL.
    let s = String::from_utf8_lossy(&s)
        .trim_matches(|c: char| c == '\0' || c.is_whitespace())
        .to_string();
    (!s.is_empty()).then_some(s)
}

/// Detects from the host; `root` is `/` on a device.
pub fn detect(root: &Path, data_dir: &Path, overrides: &CapabilityOverrides) -> Detected {
    let r = |p: &str| root.join(p.trim_start_matches('/'));
    let dmi = |f: &str| read_trim(&r(&format!("/sys/class/dmi/id/{f}")));
    let dt = |f: &str| read_trim(&r(&format!("/proc/device-tree/{f}")));
    let vendor = dmi("sys_vendor")
        .or_else(|| {
            dt("compatible").and_then(|c| c.split(',').next().map(|v| v.trim().to_string()))
        })
        .unwrap_or_else(|| "unknown".into());
    let model = dmi("product_name")
        .or_else(|| dt("model"))
        .unwrap_or_else(|| "unknown".into());
    let serial = dmi("product_serial")
        .or_else(|| dt("serial-number"))
        .unwrap_or_else(|| "unknown".into());
    let cpuinfo = std::fs::read_to_string(r("/proc/cpuinfo")).unwrap_or_default();
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count()
        .max(1) as u64;
    let cpu_mhz = read_trim(&r("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq"))
        .and_then(|k| k.parse::<u64>().ok())
        .map(|khz| khz / 1000)
        .or_else(|| {
            cpuinfo
                .lines()
                .find(|l| l.starts_with("cpu MHz"))
                .and_then(|l| l.split(':').nth(1))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .map(|f| f as u64)
        });
    let memory_bytes = std::fs::read_to_string(r("/proc/meminfo"))
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024);
    let mut interfaces = Vec::new();
    if let Ok(rd) = std::fs::read_dir(r("/sys/class/net")) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(t) = interface_type(&e.path(), &name) {
                interfaces.push((name, t.to_string()));
            }
        }
    }
    interfaces.sort();
    let mut peripherals = gpus(root);
    peripherals.extend(overrides.peripherals.iter().cloned());
    peripherals.sort();
    peripherals.dedup();
    Detected {
        vendor: overrides.vendor.clone().unwrap_or(vendor),
        model: overrides.model.clone().unwrap_or(model),
        serial: overrides.serial.clone().unwrap_or(serial),
        architecture: std::env::consts::ARCH.to_string(),
        cores,
        cpu_mhz,
        memory_bytes,
        storage_bytes: storage_bytes(data_dir),
        interfaces,
        peripherals,
    }
}

/// `ethernet`, `wifi` or `cellular` for a physical interface; `None` for loopback, bridges,
/// veths and other virtual ones.
fn interface_type(dir: &Path, name: &str) -> Option<&'static str> {
    // Virtual interfaces have no `device` link (lo, bridges, veth, podman's).
    if !dir.join("device").exists() {
        return None;
    }
    if dir.join("wireless").exists() || dir.join("phy80211").exists() {
        return Some("wifi");
    }
    let uevent = std::fs::read_to_string(dir.join("uevent")).unwrap_or_default();
    if uevent.contains("DEVTYPE=wwan") || name.starts_with("wwan") || name.starts_with("usb") {
        return Some("cellular");
    }
    // ARPHRD_ETHER = 1; ARPHRD_NONE (raw IP modems) = 65534.
    match read_trim(&dir.join("type")).as_deref() {
        Some("1") => Some("ethernet"),
        Some("65534") => Some("cellular"),
        _ => None,
    }
}

/// GPUs: DRM cards (vendor id from the PCI device) and NVIDIA device nodes.
fn gpus(root: &Path) -> Vec<Peripheral> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(root.join("sys/class/drm")) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if !n.starts_with("card") || n.contains('-') {
                continue;
            }
            let vendor = read_trim(&e.path().join("device/vendor"));
            let manufacturer = vendor.as_deref().map(|v| {
                match v {
                    "0x10de" => "NVIDIA",
                    "0x1002" => "AMD",
                    "0x8086" => "Intel",
                    other => other,
                }
                .to_string()
            });
            out.push(Peripheral {
                kind: "gpu".into(),
                manufacturer,
                model: read_trim(&e.path().join("device/device")),
            });
        }
    }
    if out.is_empty() && root.join("dev/nvidia0").exists() {
        out.push(Peripheral {
            kind: "gpu".into(),
            manufacturer: Some("NVIDIA".into()),
            model: None,
        });
    }
    out
}

/// Size of the filesystem holding `dir` (the data partition): the mount's block device size
/// from `/proc/self/mountinfo` and `/sys/class/block/<dev>/size`; `None` when it cannot be
/// told (overlay, tmpfs).
pub fn storage_bytes(dir: &Path) -> Option<u64> {
    let mut probe: PathBuf = dir.to_path_buf();
    while !probe.exists() {
        probe = probe.parent()?.to_path_buf();
    }
    let probe = probe.canonicalize().ok()?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    // Longest mount point that is a prefix of the directory.
    let (_, dev) = info
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let mnt = *f.get(4)?;
            let majmin = *f.get(2)?;
            probe
                .starts_with(mnt)
                .then(|| (mnt.len(), majmin.to_string()))
        })
        .max_by_key(|(n, _)| *n)?;
    let sectors: u64 = read_trim(&PathBuf::from(format!("/sys/dev/block/{dev}/size")))?
        .parse()
        .ok()?;
    Some(sectors * 512)
}

/// Kubernetes-style binary quantity (`7816Mi`), as the draft's examples write sizes.
fn quantity(bytes: Option<u64>) -> String {
    match bytes {
        Some(b) if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{}Gi", b >> 30),
        Some(b) => format!("{}Mi", b >> 20),
        None => "unknown".into(),
    }
}

/// The `DeviceCapabilities` document (draft shape, `docs/wfm-api.md`).
pub fn document(device_id: &str, d: &Detected) -> Value {
    let mut cpu = json!({"cores": d.cores, "architecture": d.architecture});
    if let Some(mhz) = d.cpu_mhz {
        cpu["frequency"] = json!(format!("{mhz}MHz"));
    }
    json!({
        "apiVersion": "device.margo/v1",
        "kind": "DeviceCapabilities",
        "properties": {
            "id": device_id,
            "vendor": d.vendor,
            "modelNumber": d.model,
            "serialNumber": d.serial,
            "roles": ["Standalone Device"],
            "resources": {
                "cpu": cpu,
                "memory": quantity(d.memory_bytes),
                "storage": quantity(d.storage_bytes),
                "peripherals": d.peripherals,
                "interfaces": d.interfaces.iter()
                    .map(|(n, t)| json!({"name": n, "type": t}))
                    .collect::<Vec<_>>(),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_from_a_fake_root_and_overrides_win() {
        let root = std::env::temp_dir().join(format!("margo-dev-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let w = |p: &str, s: &str| {
            let p = root.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, s).unwrap();
        };
        w("proc/device-tree/model", "Raspberry Pi 4 Model B\0");
        w(
            "proc/device-tree/compatible",
            "raspberrypi,4-model-b\0brcm,bcm2711\0",
        );
        w("proc/device-tree/serial-number", "10000000abcdef\0");
        w(
            "proc/cpuinfo",
            "processor\t: 0\nprocessor\t: 1\nprocessor\t: 2\nprocessor\t: 3\n",
        );
        w("proc/meminfo", "MemTotal:        3884836 kB\n");
        w(
            "sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq",
            "1800000\n",
        );
        w("sys/class/net/eth0/type", "1\n");
        w("sys/class/net/eth0/device/x", "");
        w("sys/class/net/wlan0/type", "1\n");
        w("sys/class/net/wlan0/device/x", "");
        w("sys/class/net/wlan0/wireless/x", "");
        w("sys/class/net/wwan0/type", "65534\n");
        w("sys/class/net/wwan0/device/x", "");
        w("sys/class/net/lo/type", "772\n");
        w("sys/class/net/podman0/type", "1\n");
        w("sys/class/drm/card0/device/vendor", "0x10de\n");
        w("sys/class/drm/card0-HDMI-A-1/status", "connected\n");
        let d = detect(&root, &root, &CapabilityOverrides::default());
        assert_eq!(d.vendor, "raspberrypi");
        assert_eq!(d.model, "Raspberry Pi 4 Model B");
        assert_eq!(d.serial, "10000000abcdef");
        assert_eq!((d.cores, d.cpu_mhz), (4, Some(1800)));
        assert_eq!(d.memory_bytes, Some(3884836 * 1024));
        let types: Vec<_> = d
            .interfaces
            .iter()
            .map(|(n, t)| format!("{n}={t}"))
            .collect();
        assert_eq!(types, ["eth0=ethernet", "wlan0=wifi", "wwan0=cellular"]);
        assert_eq!(d.peripherals.len(), 1);
        assert_eq!(d.peripherals[0].manufacturer.as_deref(), Some("NVIDIA"));
        let o = CapabilityOverrides {
            serial: Some("SN-42".into()),
            peripherals: vec![Peripheral {
                kind: "can".into(),
                ..Peripheral::default()
            }],
            ..CapabilityOverrides::default()
        };
        let d = detect(&root, &root, &o);
        assert_eq!(d.serial, "SN-42");
        assert_eq!(d.peripherals.len(), 2);
        let doc = document("dev-1", &d);
        assert_eq!(doc["properties"]["resources"]["memory"], "3793Mi");
        assert_eq!(doc["properties"]["roles"][0], "Standalone Device");
        let _ = std::fs::remove_dir_all(&root);
    }
}
