"""The deployments API: /deploy/llm, /deploy/list, /deploy/{deploy_id} and its actions."""
