#!/usr/bin/python
"""Builds a release on the controller (delegate_to: localhost): see module_utils/asgikit_build.py."""

from __future__ import annotations

from pathlib import Path

from ansible.module_utils.asgikit_build import (
    BuildError,
    build_artifact,
    build_source,
    check_python,
    url_secrets,
)
from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: asgi_app_build
short_description: Build an asgikit release once, and its artifact once per host platform
description:
  - C(stage=source) checks asgi_app_source and its lock, builds the app's wheels and the locked
    set of dependencies (the app's lock plus the server stack), cached by their inputs.
  - C(stage=artifact) checks the host's Python against the app's requires-python, then packs the
    wheels for one host platform (hash-checked), the project's files and a manifest into one tar.
  - Runs on the controller; hosts never reach an index.
options:
  stage: {type: str, required: true, choices: [source, artifact]}
  source: {type: str, description: asgi_app_source.}
  cache: {type: path, required: true, description: The controller's build cache.}
  server_packages: {type: list, elements: str, default: []}
  python: {type: str, default: ""}
  project_files: {type: list, elements: str, default: []}
  index_env: {type: dict, default: {}, description: Environment for uv and pip (index, CA bundle).}
  description: {type: dict, description: The source stage's result (artifact stage).}
  platform: {type: dict, description: The host's Python and platform tags (artifact stage).}
  tools: {type: list, elements: str, default: [], description: Requirements of the kit's host tools (uv).}
  host: {type: str, default: ""}
"""


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "stage": {"type": "str", "required": True, "choices": ["source", "artifact"]},
            "source": {"type": "str"},
            "cache": {"type": "path", "required": True},
            "server_packages": {"type": "list", "elements": "str", "default": []},
            "python": {"type": "str", "default": ""},
            "project_files": {"type": "list", "elements": "str", "default": []},
            "index_env": {"type": "dict", "default": {}, "no_log": True},
            "description": {"type": "dict"},
            "platform": {"type": "dict"},
            "tools": {"type": "list", "elements": "str", "default": []},
            "host": {"type": "str", "default": ""},
        },
        required_if=[("stage", "source", ["source"]), ("stage", "artifact", ["description", "platform"])],
    )
    params = module.params
    # A git URL's user:token never shows in the result, its invocation included.
    module.no_log_values.update(url_secrets(params["source"] or ""))
    cache = Path(params["cache"])
    try:
        if params["stage"] == "source":
            result = build_source(
                params["source"],
                cache,
                params["server_packages"],
                params["python"],
                params["project_files"],
                params["index_env"],
            )
        else:
            description, platform = params["description"], params["platform"]
            check_python(description, params["host"], description["python"], platform["python_full"])
            result = build_artifact(description, platform, cache, params["tools"], params["index_env"])
    except BuildError as error:
        module.fail_json(msg=str(error))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
